//! Command-line flags. Every flag has an environment variable; defaults are constants.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

mod acme;

pub use acme::AcmeArgs;

use crate::limits::{Port, Site, TrustedProxies, count, parse_allowed_host, parse_trusted_proxy};
use crate::policy::DefaultAccess;
use crate::store::Retention;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_STORE: &str = "sqlite:ssechat.db";
/// Messages kept per room by the memory store, unless `--retain` says otherwise.
pub const DEFAULT_RETAIN_MEMORY: usize = 1_000;
/// Messages kept per room by durable stores, unless `--retain` says otherwise.
pub const DEFAULT_RETAIN_DURABLE: usize = 10_000;
pub const DEFAULT_BUFFER: usize = 1_024;
/// Rooms the memory store holds at most, unless `--max-rooms` says otherwise.
pub const DEFAULT_MAX_ROOMS_MEMORY: usize = 10_000;
pub const DEFAULT_PAGE_MESSAGES: usize = 100;

/// ssechat: a real-time chat server over plain HTTP and Server-Sent Events.
#[derive(Debug, Clone, Parser)]
#[command(name = "ssechat", version, about, long_about = None)]
#[command(mut_args(|arg| arg.hide_env_values(true)))]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SSECHAT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Where history lives: `sqlite:PATH` (durable), `redis://HOST:PORT/DB` (one Redis shared
    /// by every node), `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]` (a Redis
    /// Cluster, named by some of its nodes), or `memory` (lost on restart).
    /// (Also after a command: `ssechat user list --store ...`.)
    #[arg(long, env = "SSECHAT_STORE", default_value = DEFAULT_STORE, global = true)]
    pub store: StoreUrl,

    /// Messages kept per room [default: 10000, or 1000 with --store memory].
    #[arg(long, visible_alias = "history", env = "SSECHAT_RETAIN", value_parser = positive)]
    pub retain: Option<usize>,

    /// Drop messages older than this (for example `7d`) [default: kept regardless of age].
    #[arg(long, env = "SSECHAT_RETAIN_FOR", value_parser = positive_duration)]
    pub retain_for: Option<Duration>,

    /// Messages shown on a room page when it is opened.
    #[arg(long, env = "SSECHAT_PAGE_MESSAGES", default_value_t = DEFAULT_PAGE_MESSAGES, value_parser = positive)]
    pub page_messages: usize,

    /// How often an idle event stream sends a comment, so proxies keep it open.
    #[arg(long, env = "SSECHAT_HEARTBEAT", default_value = "15s", value_parser = positive_duration)]
    pub heartbeat: Duration,

    /// How long an EventSource waits before reconnecting (sent as `retry:`).
    #[arg(long, env = "SSECHAT_RETRY", default_value = "3s", value_parser = positive_duration)]
    pub retry: Duration,

    /// The least time between two writes to one stream: at high message rates one write
    /// then carries several messages (0s writes every message at once).
    #[arg(long, env = "SSECHAT_COALESCE", default_value = "15ms", value_parser = duration)]
    pub coalesce: Duration,

    /// How long a reader who left still counts as present, so reconnects don't flap.
    #[arg(long, env = "SSECHAT_PRESENCE_GRACE", default_value = "5s", value_parser = duration)]
    pub presence_grace: Duration,

    /// Frames a room buffers for its slowest reader; one further behind catches up from history.
    #[arg(long, env = "SSECHAT_BUFFER", default_value_t = DEFAULT_BUFFER, value_parser = positive)]
    pub buffer: usize,

    /// A proxy whose `Forwarded` / `X-Forwarded-For` headers name the client: an address or a
    /// CIDR range. Repeat the flag, or comma-separate (also in the env var).
    #[arg(long, env = "SSECHAT_TRUSTED_PROXY", value_name = "CIDR", value_delimiter = ',', value_parser = parse_trusted_proxy)]
    pub trusted_proxy: Vec<IpNet>,

    /// Deprecated: the same as `--trusted-proxy 127.0.0.0/8,::1`. (Like every flag without a
    /// value, its variable takes 1 or 0, true or false, yes or no, on or off.)
    #[arg(long, env = "SSECHAT_TRUST_PROXY", value_parser = boolean)]
    pub trust_proxy: bool,

    /// The address browsers use, as `scheme://host[:port][/path]` (for example
    /// `https://chat.example`): posts must come from pages of this origin. By default the
    /// `Host` header, or behind a trusted proxy the host it forwards.
    #[arg(long, env = "SSECHAT_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<PublicUrl>,

    /// Sends per second each client may make on average (token bucket refill rate; above
    /// zero: 0.01 is one send per 100 s).
    #[arg(long, env = "SSECHAT_SEND_RATE", default_value_t = 5.0, value_parser = positive_rate)]
    pub send_rate: f64,

    /// Sends a client may make in a burst (token bucket size).
    #[arg(long, env = "SSECHAT_SEND_BURST", default_value_t = 30, value_parser = positive_burst)]
    pub send_burst: u32,

    /// Open streams at most [default: the open-file limit minus 256].
    #[arg(long, env = "SSECHAT_MAX_STREAMS", value_parser = positive)]
    pub max_streams: Option<usize>,

    /// Open streams at most per client.
    #[arg(long, env = "SSECHAT_MAX_STREAMS_PER_CLIENT", default_value_t = 100, value_parser = positive)]
    pub max_streams_per_client: usize,

    /// Open connections at most, of every kind [default: the open-file limit minus 64, a
    /// reserve for the store and logs]. Streams are refused before this (--max-streams).
    #[arg(long, env = "SSECHAT_MAX_CONNECTIONS", value_parser = positive)]
    pub max_connections: Option<usize>,

    /// Open connections at most per client (streams included; a trusted proxy is exempt).
    #[arg(long, env = "SSECHAT_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256, value_parser = positive)]
    pub max_connections_per_client: usize,

    /// The most time a client may take to send a whole request head.
    #[arg(long, env = "SSECHAT_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,

    /// The most time a client may take to send a whole request body.
    #[arg(long, env = "SSECHAT_BODY_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub body_timeout: Duration,

    /// How long a keep-alive connection may wait, idle, for its next request.
    #[arg(long, env = "SSECHAT_IDLE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub idle_timeout: Duration,

    /// A stream whose client reads nothing for this long is cut off (it resumes on reconnect).
    #[arg(long, env = "SSECHAT_STALL_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub stall_timeout: Duration,

    /// On shutdown, streams end spread over this long, each with a jittered `retry:`, so
    /// clients don't all reconnect at once.
    #[arg(long, env = "SSECHAT_DRAIN_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Origins allowed to call the API from the browser (CORS), as `scheme://host[:port]`
    /// (http or https; a trailing `/` is dropped); none by default. Repeat the flag, or
    /// comma-separate in the env var.
    #[arg(long, env = "SSECHAT_CORS_ORIGIN", value_name = "ORIGIN", value_delimiter = ',', value_parser = parse_cors_origin)]
    pub cors_origin: Vec<String>,

    /// On Ctrl-C or SIGTERM, how long open connections get to finish before the server exits.
    #[arg(long, env = "SSECHAT_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// Log filter, in `tracing` syntax (for example `info` or `ssechat=debug`). Logs go to stderr.
    #[arg(long, env = "SSECHAT_LOG", default_value = "info", value_parser = log_filter)]
    pub log: String,

    /// Typing signals per second each client may send on average, whatever author and room
    /// they name (token bucket refill rate).
    #[arg(long, env = "SSECHAT_TYPING_RATE", default_value_t = 2.0, value_parser = positive_rate)]
    pub typing_rate: f64,

    /// Typing signals a client may send in a burst (token bucket size).
    #[arg(long, env = "SSECHAT_TYPING_BURST", default_value_t = 10, value_parser = positive_burst)]
    pub typing_burst: u32,

    /// Names a presence view lists; readers under further names are counted with the
    /// anonymous ones, so a change of presence costs a bounded number of bytes.
    #[arg(long, env = "SSECHAT_PRESENCE_NAMES", default_value_t = 20, value_parser = positive)]
    pub presence_names: usize,

    /// Distinct names one client may read a room under; its streams under further names
    /// count as anonymous readers.
    #[arg(long, env = "SSECHAT_NAMES_PER_CLIENT", default_value_t = 5, value_parser = positive)]
    pub names_per_client: usize,

    /// A host name the server answers for, besides localhost and loopback addresses (and
    /// the host of --public-url). While listening on a loopback address only those are
    /// answered (others get 421: DNS rebinding); on any other address every host is,
    /// unless this names some. Repeat the flag, or comma-separate (also in the env var).
    #[arg(long, env = "SSECHAT_ALLOWED_HOST", value_name = "NAME", value_delimiter = ',', value_parser = parse_allowed_host)]
    pub allowed_host: Vec<String>,
    /// Rooms the memory store holds at most; over it, the idlest rooms are forgotten, messages
    /// and all [default: 10000]. Only for `--store memory`: SQLite and Redis keep every room.
    #[arg(long, env = "SSECHAT_MAX_ROOMS", value_parser = positive)]
    pub max_rooms: Option<usize>,

    /// The most time `/send` spends storing a message. A store that does not confirm a write
    /// in time is asked again under the message's idempotency key until this has passed;
    /// then the answer is `503` saying the outcome is unknown, with the key to retry with.
    #[arg(long, env = "SSECHAT_SEND_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub send_timeout: Duration,

    /// How long after posting a signed-in author may still edit a message (0s: never).
    /// Deleting has no time limit.
    #[arg(long, env = "SSECHAT_EDIT_WINDOW", default_value = "15m", value_parser = duration)]
    pub edit_window: Duration,
    /// How long a browser stays signed in without using the site; each use starts it again.
    #[arg(long, env = "SSECHAT_SESSION_TTL", default_value = "30d", value_parser = positive_duration)]
    pub session_ttl: Duration,
    /// What applies where no access rule matches (`ssechat access`): `rw` (anyone may read
    /// and post), `ro` (read only) or `deny`.
    #[arg(long, env = "SSECHAT_DEFAULT_ACCESS", value_enum, default_value = "rw")]
    pub default_access: DefaultAccess,

    /// Serve HTTPS (HTTP/2 and HTTP/1.1) on --listen with this PEM certificate chain (needs
    /// --tls-key). Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "SSECHAT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SSECHAT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Also listen on this address for plain HTTP, answering every request `308` to its
    /// https URL (with TLS on).
    #[arg(long, env = "SSECHAT_REDIRECT_HTTP", value_name = "ADDR")]
    pub redirect_http: Option<String>,
    #[command(flatten)]
    pub acme: AcmeArgs,
}

impl Config {
    /// The defaults, as if started with no flags and no environment: for tests and embedding.
    pub fn defaults() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            store: StoreUrl::Sqlite(PathBuf::from("ssechat.db")),
            retain: None,
            retain_for: None,
            page_messages: DEFAULT_PAGE_MESSAGES,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            coalesce: Duration::from_millis(15),
            presence_grace: Duration::from_secs(5),
            buffer: DEFAULT_BUFFER,
            trusted_proxy: Vec::new(),
            trust_proxy: false,
            public_url: None,
            send_rate: 5.0,
            send_burst: 30,
            max_streams: None,
            max_streams_per_client: 100,
            max_connections: None,
            max_connections_per_client: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(2),
            cors_origin: Vec::new(),
            shutdown_timeout: Duration::from_secs(5),
            log: "info".to_owned(),
            typing_rate: 2.0,
            typing_burst: 10,
            presence_names: 20,
            names_per_client: 5,
            allowed_host: Vec::new(),
            max_rooms: None,
            send_timeout: Duration::from_secs(10),
            edit_window: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            default_access: DefaultAccess::Rw,
            tls_cert: None,
            tls_key: None,
            redirect_http: None,
            acme: AcmeArgs::defaults(),
        }
    }
}

impl Config {
    /// The cap on open streams: as asked, or a little under the open-file limit, so the
    /// server refuses streams cleanly before `accept` starts failing.
    pub fn stream_cap(&self) -> usize {
        self.max_streams.unwrap_or_else(|| {
            crate::limits::open_file_limit().map_or(10_000, |n| n.saturating_sub(256).max(16))
        })
    }

    /// The cap on open connections: as asked, or just under the open-file limit, so that
    /// `accept` never runs out of descriptors while the store still has some.
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            crate::limits::open_file_limit().map_or(10_000, |n| n.saturating_sub(64).max(32))
        })
    }

    /// What each room keeps, with the default that suits the store.
    pub fn retention(&self) -> Retention {
        let (default, max_rooms) = match self.store {
            StoreUrl::Memory => {
                (DEFAULT_RETAIN_MEMORY, Some(self.max_rooms.unwrap_or(DEFAULT_MAX_ROOMS_MEMORY)))
            }
            StoreUrl::Sqlite(_) | StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => {
                (DEFAULT_RETAIN_DURABLE, None)
            }
        };
        Retention { count: self.retain.unwrap_or(default), age: self.retain_for, max_rooms }
    }
}

impl Config {
    /// What the server runs with, for the log at start: the store, what it keeps, the limits.
    pub fn summary(&self) -> [String; 3] {
        let retention = self.retention();
        let age = retention.age.map_or("of any age".to_owned(), |age| {
            format!("for at most {}", humantime::format_duration(age))
        });
        let rooms = retention.max_rooms.map(|n| format!(", in at most {}", count(n, "room")));
        let limits = [
            format!(
                "{} ({} per client)",
                count(self.stream_cap(), "open stream"),
                self.max_streams_per_client
            ),
            format!(
                "{} ({} per client)",
                count(self.connection_cap(), "open connection"),
                self.max_connections_per_client
            ),
            format!("{} sends/s per client (bursts of {})", self.send_rate, self.send_burst),
            format!("{} typing signals/s per client (bursts of {})", self.typing_rate, self.typing_burst),
        ];
        [
            format!("store: {}", self.store.described()),
            format!(
                "retention: {} per room, {age}{}",
                count(retention.count, "message"),
                rooms.unwrap_or_default()
            ),
            format!("limits: {}", limits.join(", ")),
        ]
    }
}

/// What `--trust-proxy` stands for now.
pub const TRUST_PROXY_ALIAS: &str = "127.0.0.0/8,::1";

impl Config {
    /// The proxies to believe: `--trusted-proxy`, and loopback if `--trust-proxy` is given.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        let alias = TRUST_PROXY_ALIAS.split(',').map(|net| parse_trusted_proxy(net).expect("valid"));
        let alias = alias.filter(|_| self.trust_proxy);
        TrustedProxies::new(self.trusted_proxy.iter().copied().chain(alias))
    }

    /// What to warn about at start: deprecated flags still in use.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.trust_proxy {
            warnings.push(format!(
                "--trust-proxy (SSECHAT_TRUST_PROXY) is deprecated: it now trusts only {TRUST_PROXY_ALIAS}; \
                 use --trusted-proxy CIDR (SSECHAT_TRUSTED_PROXY) to name your proxies"
            ));
        }
        if self.max_rooms.is_some() && self.store != StoreUrl::Memory {
            warnings.push(
                "--max-rooms (SSECHAT_MAX_ROOMS) applies to --store memory only: SQLite and Redis keep every room"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// Parses the command line `args` (the program's name first) and the environment. An error
/// about a value that came from an environment variable names the variable, where clap names
/// only the flag (`--coalesce <COALESCE>`), which the user never typed.
pub fn parse_args<P: clap::Parser>(args: impl IntoIterator<Item = OsString>) -> Result<P, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    P::try_parse_from(&args).map_err(|error| name_the_variable(error, P::command(), &args))
}

fn name_the_variable(mut error: clap::Error, mut command: clap::Command, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    command.build(); // an argument shows as `--flag <FLAG>` only once built
    let Some(ContextValue::String(named)) = error.get(ContextKind::InvalidArg) else { return error };
    let Some(arg) = command.get_arguments().find(|arg| arg.to_string() == *named) else { return error };
    let (Some(var), Some(longs)) = (arg.get_env(), arg.get_long_and_visible_aliases()) else { return error };
    let typed = |word: &OsString| {
        let word = word.to_string_lossy();
        let flag = word.strip_prefix("--").map(|flag| flag.split_once('=').map_or(flag, |(flag, _)| flag));
        flag.is_some_and(|flag| longs.contains(&flag))
    };
    if std::env::var_os(var).is_none() || args.iter().skip(1).any(typed) {
        return error;
    }
    let named = format!("{} (--{})", var.to_string_lossy(), longs[0]);
    error.insert(ContextKind::InvalidArg, ContextValue::String(named));
    error
}

/// The `--public-url` value: where browsers reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// Its scheme, host and port: what an `Origin` must name. (The path plays no part.)
    site: Site,
}

impl PublicUrl {
    /// The site posts must come from.
    pub fn site(&self) -> &Site {
        &self.site
    }
}

impl FromStr for PublicUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{s:?} is not a public URL like https://chat.example or http://host:8080/chat: {why}")
        };
        let (scheme, uri, _) = http_url(s, &bad)?;
        let authority = uri.authority().expect("checked by http_url");
        Ok(Self { site: Site::new(Some(scheme), authority.as_str(), Port::Default) })
    }
}

/// The `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
    Sqlite(PathBuf),
    Redis(String),
    /// `redis+cluster://HOST:PORT[,HOST:PORT...]`: a Redis Cluster's seed nodes, each as
    /// `redis://HOST:PORT` (what `redis::cluster::ClusterClient::new` takes). Cluster mode is
    /// chosen by this scheme only, never guessed: `redis://` at a Cluster node is refused at
    /// start (`RedisStore::open`).
    RedisCluster(Vec<String>),
}

/// The seed nodes of `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]` (the part
/// after `://`), each as `redis://[USER:PASSWORD@]HOST:PORT`: the credentials, if any, are
/// every node's.
fn cluster_seeds(list: &str) -> Result<Vec<String>, String> {
    let example = "as in redis+cluster://127.0.0.1:7000,127.0.0.1:7001";
    let (userinfo, nodes) = match list.rsplit_once('@') {
        Some((userinfo, nodes)) => (format!("{userinfo}@"), nodes),
        None => (String::new(), list),
    };
    let shown = crate::store::redact_password(&format!("redis+cluster://{list}"));
    if userinfo.contains([',', '/', ' ']) {
        return Err(format!("bad credentials in {shown}: USER:PASSWORD@ comes once, before the first node"));
    }
    if nodes.is_empty() {
        return Err(format!("redis+cluster:// needs at least one HOST:PORT, {example}"));
    }
    nodes
        .split(',')
        .map(|node| {
            let bad = |why: &str| format!("bad node {node:?} in {shown}: {why}, {example}");
            let (host, port) = node.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
            if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
                return Err(bad("expected HOST:PORT (no path or options)"));
            }
            match port.parse::<u16>() {
                Ok(1..) => Ok(format!("redis://{userinfo}{node}")),
                _ => Err(bad("the port must be a number from 1 to 65535")),
            }
        })
        .collect()
}

impl FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            return Ok(StoreUrl::Memory);
        }
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            return Ok(StoreUrl::Redis(s.to_owned()));
        }
        if let Some(list) = s.strip_prefix("redis+cluster://") {
            return cluster_seeds(list).map(StoreUrl::RedisCluster);
        }
        match s.strip_prefix("sqlite:") {
            Some("") => Err("sqlite: needs a file path, as in sqlite:ssechat.db".to_owned()),
            Some(path) => Ok(StoreUrl::Sqlite(PathBuf::from(path))),
            None => Err(format!(
                "unknown store {s:?}; expected `sqlite:PATH`, `redis://HOST:PORT/DB`, \
                 `redis+cluster://HOST:PORT[,HOST:PORT...]` or `memory`"
            )),
        }
    }
}

impl StoreUrl {
    /// The store for a log line: a relative file path also made absolute, a Redis password
    /// replaced by `***`.
    pub fn described(&self) -> String {
        match self {
            StoreUrl::Memory => "memory (lost on restart)".to_owned(),
            StoreUrl::Sqlite(path) => match std::path::absolute(path) {
                Ok(full) if full != *path => format!("sqlite:{} ({})", path.display(), full.display()),
                _ => format!("sqlite:{}", path.display()),
            },
            StoreUrl::Redis(url) => crate::store::redact_password(url),
            StoreUrl::RedisCluster(seeds) => crate::store::RedisStore::cluster_label(seeds),
        }
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

/// A duration like `15s` or `2m`; `0s` is allowed.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 15s or 2m: {e}"))
}

/// A duration like `15s` or `2m`, longer than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
}

/// A yes or no, for the variable of a flag that takes no value (`SSECHAT_TRUST_PROXY=1`);
/// set but empty means no.
/// (clap's `BoolishValueParser` says only "value was not a boolean", and takes more.)
pub(crate) fn boolean(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{s:?} is not one of 1 or 0, true or false, yes or no, on or off")),
    }
}

/// A rate per second above zero (a token bucket's refill): `0` would refuse everything after
/// the burst while promising a retry, so it is refused here.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a rate per second above zero, like 5 or 0.5")),
    }
}

/// A token bucket's size: at least one.
fn positive_burst(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number from 1 to {}", u32::MAX)),
    }
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, http or https. Scheme
/// and host are lowered, the scheme's default port and one trailing `/` dropped, so that
/// `https://Chat.Example:443/` matches what a browser sends (`https://chat.example`).
fn parse_cors_origin(s: &str) -> Result<String, String> {
    let bad =
        |why: &str| format!("{s:?} is not an origin like https://chat.example or http://host:8080: {why}");
    let (scheme, uri, port) = http_url(s, &bad)?;
    if !matches!(uri.path(), "" | "/") {
        return Err(bad("an origin has no path"));
    }
    let host = uri.host().expect("checked by http_url");
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port.filter(|&port| port != default_port).map(|port| format!(":{port}")).unwrap_or_default();
    Ok(format!("{scheme}://{}{port}", host.to_ascii_lowercase()))
}

/// An http or https URL, checked: no query, fragment or user, a host, a port that is a
/// number. Its scheme (lower case), the URI and the port if one is given; `bad` words errors.
fn http_url(
    s: &str,
    bad: &dyn Fn(&str) -> String,
) -> Result<(&'static str, axum::http::Uri, Option<u16>), String> {
    if s.contains(['#', '?']) {
        return Err(bad("no query or fragment"));
    }
    let uri: axum::http::Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(bad("it must start with http:// or https://")),
    };
    let authority =
        uri.authority().filter(|a| !a.host().is_empty()).ok_or_else(|| bad("it names no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("no user name or password"));
    }
    let port = match authority.as_str()[authority.host().len()..].strip_prefix(':') {
        None => None,
        Some(port) => Some(port.parse::<u16>().map_err(|_| bad("the port must be a number up to 65535"))?),
    };
    Ok((scheme, uri, port))
}

/// A log filter in `tracing` syntax, checked now so that a typo stops the start.
fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{s:?} is not a log filter like info or ssechat=debug,warn: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn defaults_match_the_flags() {
        let parsed = Config::try_parse_from(["ssechat"]).unwrap();
        let defaults = Config::defaults();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn default_access_is_one_of_three() {
        let c = Config::try_parse_from(["ssechat", "--default-access", "deny"]).unwrap();
        assert_eq!(c.default_access, DefaultAccess::Deny);
        let bad = Config::try_parse_from(["ssechat", "--default-access", "open"]).unwrap_err().to_string();
        assert!(bad.contains("possible values: rw, ro, deny"), "{bad}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["ssechat", "--heartbeat", "0s"]).is_err());
        assert!(Config::try_parse_from(["ssechat", "--retain", "0"]).is_err());
        assert!(Config::try_parse_from(["ssechat", "--store", "sqlite:"]).is_err());
        assert!(Config::try_parse_from(["ssechat", "--store", "mongodb://x"]).is_err());
        let bad =
            Config::try_parse_from(["ssechat", "--trusted-proxy", "10.0.0.0/8,10.0.0.300"]).unwrap_err();
        assert!(bad.to_string().contains("\"10.0.0.300\" is not an IP address or CIDR range"), "{bad}");
        let c = Config::try_parse_from(["ssechat", "--heartbeat", "2m", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(120));
    }

    /// The message of the refusal of `args`.
    fn refusal(args: &[&str]) -> String {
        let args = std::iter::once("ssechat").chain(args.iter().copied()).map(OsString::from);
        parse_args::<Config>(args).unwrap_err().to_string()
    }

    #[test]
    fn cors_origins_are_origins_without_a_path() {
        let c =
            Config::try_parse_from(["ssechat", "--cors-origin", "https://A.example/,http://b.example:8080"]);
        assert_eq!(c.unwrap().cors_origin, ["https://a.example", "http://b.example:8080"]);
        assert_eq!(parse_cors_origin("HTTPS://a.example:443").unwrap(), "https://a.example");
        assert_eq!(parse_cors_origin("http://[::1]:3000").unwrap(), "http://[::1]:3000");
        for (bad, why) in [
            ("not a url", "not an origin like https://chat.example"),
            ("a.example", "it must start with http:// or https://"),
            ("ftp://a.example", "it must start with http:// or https://"),
            ("https://", "not an origin"),
            ("https://a.example/chat", "an origin has no path"),
            ("https://a.example/?x=1", "no query or fragment"),
            ("https://a.example#x", "no query or fragment"),
            ("https://u:p@a.example", "no user name or password"),
            ("https://a.example:99999", "not an origin"),
        ] {
            let err = parse_cors_origin(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("{bad:?} is not an origin")) && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rates_and_bursts_are_above_zero() {
        for flag in ["--send-rate", "--typing-rate"] {
            for bad in ["0", "-1", "NaN", "inf", "-0", "five"] {
                let err = refusal(&[&format!("{flag}={bad}")]);
                assert!(err.contains("is not a rate per second above zero"), "{flag} {bad}: {err}");
            }
        }
        for flag in ["--send-burst", "--typing-burst"] {
            assert!(refusal(&[flag, "0"]).contains("\"0\" is not a whole number from 1 to 4294967295"));
        }
        let c = Config::try_parse_from(["ssechat", "--send-rate", "0.01", "--send-burst", "1"]).unwrap();
        assert_eq!((c.send_rate, c.send_burst), (0.01, 1));
    }

    #[test]
    fn a_bad_log_filter_and_every_bad_duration_are_refused_in_so_many_words() {
        assert!(refusal(&["--log", "bad[filter"]).contains("\"bad[filter\" is not a log filter like info"));
        assert!(Config::try_parse_from(["ssechat", "--log", "ssechat=debug,warn"]).is_ok());
        let mut command = Config::command();
        command.build();
        let durations = command.get_arguments().filter(|arg| {
            let default = arg.get_default_values().first().and_then(|v| v.to_str()).unwrap_or("");
            default.ends_with(['s', 'm', 'd']) && default.starts_with(|c: char| c.is_ascii_digit())
        });
        let flags: Vec<String> = durations.map(|arg| format!("--{}", arg.get_long().unwrap())).collect();
        assert!(flags.len() >= 12 && flags.contains(&"--coalesce".to_owned()), "{flags:?}");
        for flag in flags.iter().map(String::as_str).chain(["--retain-for"]) {
            let err = refusal(&[flag, "soon"]);
            assert!(err.contains(&format!("for '{flag} <")), "{err}");
            assert!(err.contains("\"soon\" is not a duration like 15s or 2m"), "{flag}: {err}");
        }
    }

    #[test]
    fn every_flag_without_a_value_takes_yes_or_no_from_its_variable() {
        let command = Config::command();
        let switches = command
            .get_arguments()
            .filter(|arg| arg.get_env().is_some() && matches!(arg.get_action(), clap::ArgAction::SetTrue));
        let switches: Vec<&clap::Arg> = switches.collect();
        assert!(switches.len() >= 2, "--trust-proxy and --acme-staging");
        let words = [("1", true), ("yes", true), ("On", true), ("TRUE", true)];
        let words = words.into_iter().chain([("0", false), ("no", false), ("OFF", false), ("false", false)]);
        for arg in switches {
            let (id, long) = (arg.get_id().to_string(), format!("--{}", arg.get_long().unwrap()));
            // The same argument taking a value: what its variable goes through.
            let taking = Config::command().mut_arg(&id, |arg| arg.action(clap::ArgAction::Set));
            for (word, meaning) in words.clone() {
                let matches = taking.clone().try_get_matches_from(["t", &long, word]).unwrap();
                assert_eq!(matches.get_one::<bool>(&id), Some(&meaning), "{long} {word}");
            }
            let err = taking.clone().try_get_matches_from(["t", &long, "maybe"]).unwrap_err().to_string();
            assert!(err.contains("\"maybe\" is not one of 1 or 0, true or false, yes or no, on or off"));
        }
    }

    #[test]
    fn the_summary_says_what_runs_and_hides_a_redis_password() {
        let c = Config::try_parse_from([
            "ssechat",
            "--store",
            "memory",
            "--retain",
            "1",
            "--max-rooms",
            "1",
            "--max-streams",
            "1",
            "--max-connections",
            "2",
        ]);
        let [store, retention, limits] = c.unwrap().summary();
        assert_eq!(store, "store: memory (lost on restart)");
        assert_eq!(retention, "retention: 1 message per room, of any age, in at most 1 room");
        assert!(limits.starts_with("limits: 1 open stream (100 per client), 2 open connections (256 per"));
        // As the README shows them.
        let [store, retention, limits] = Config::defaults().summary();
        assert!(
            store.starts_with("store: sqlite:ssechat.db (/") && store.ends_with("/ssechat.db)"),
            "{store}"
        );
        assert_eq!(retention, "retention: 10000 messages per room, of any age");
        let (streams, rest) = limits.split_once(" open streams (100 per client), ").unwrap();
        let (connections, rest) = rest.split_once(" open connections (256 per client), ").unwrap();
        assert!(streams.starts_with("limits: ") && connections.parse::<usize>().is_ok(), "{limits}");
        assert_eq!(rest, "5 sends/s per client (bursts of 30), 2 typing signals/s per client (bursts of 10)");
        use crate::store::redact_password;
        assert_eq!(redact_password("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_password("rediss://ana:p:w@h/1?x=@"), "rediss://ana:***@h/1?x=@");
        assert_eq!(redact_password("redis://ana@h"), "redis://ana@h");
        assert_eq!(redact_password("redis://h:6379"), "redis://h:6379");
        let absolute = StoreUrl::Sqlite(PathBuf::from("/srv/chat.db"));
        assert_eq!(absolute.described(), "sqlite:/srv/chat.db");
        let relative = StoreUrl::Sqlite(PathBuf::from("chat.db")).described();
        assert!(relative.starts_with("sqlite:chat.db (/") && relative.ends_with("/chat.db)"), "{relative}");
    }

    #[test]
    fn a_cluster_store_names_its_seed_nodes_and_a_bad_list_is_a_clear_error() {
        let store: StoreUrl = "redis+cluster://127.0.0.1:7000,[::1]:7001".parse().unwrap();
        let seeds = ["redis://127.0.0.1:7000", "redis://[::1]:7001"].map(String::from).to_vec();
        assert_eq!(store, StoreUrl::RedisCluster(seeds));
        assert_eq!(store.described(), "redis+cluster://127.0.0.1:7000,[::1]:7001");
        // Credentials, once, for every node; never shown.
        let store: StoreUrl = "redis+cluster://ana:s3cret@h:7000,h:7001".parse().unwrap();
        let seeds = ["redis://ana:s3cret@h:7000", "redis://ana:s3cret@h:7001"].map(String::from).to_vec();
        assert_eq!(store, StoreUrl::RedisCluster(seeds));
        assert_eq!(store.described(), "redis+cluster://ana:***@h:7000,h:7001");
        let err = "redis+cluster://:s3cret@h:7000,:x@h:7001".parse::<StoreUrl>().unwrap_err();
        assert!(err.contains(":***@") && !err.contains("s3cret"), "{err}");
        for (bad, why) in [
            ("redis+cluster://", "needs at least one HOST:PORT"),
            ("redis+cluster://h:7000,", "bad node \"\""),
            ("redis+cluster://h", "no :PORT"),
            ("redis+cluster://h:0", "the port must be"),
            ("redis+cluster://h:x", "the port must be"),
            ("redis+cluster://:7000", "expected HOST:PORT"),
            ("redis+cluster://u:pw@", "needs at least one HOST:PORT"),
            ("redis+cluster://h:7000/0", "the port must be"),
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err();
            assert!(err.contains(why) && err.contains("redis+cluster://127.0.0.1:7000"), "{bad}: {err}");
        }
    }

    #[test]
    fn help_names_each_variable_without_its_value() {
        let help = Config::command().render_long_help().to_string();
        assert!(help.contains("[env: SSECHAT_LISTEN]") && !help.contains("=]"), "{help}");
    }

    #[test]
    fn trusted_proxies_repeat_or_comma_separate_and_the_old_flag_means_loopback() {
        let c = Config::try_parse_from(["ssechat", "--trusted-proxy", "10.0.0.0/8,192.0.2.1"]).unwrap();
        let c2 = Config::try_parse_from([
            "ssechat",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "192.0.2.1",
        ]);
        assert_eq!(c.trusted_proxy, c2.unwrap().trusted_proxy);
        let trusted = c.trusted_proxies();
        assert!(trusted.trusts("10.1.1.1".parse().unwrap()) && trusted.trusts("192.0.2.1".parse().unwrap()));
        assert!(
            !trusted.trusts("192.0.2.2".parse().unwrap()) && !trusted.trusts("127.0.0.1".parse().unwrap())
        );
        assert!(c.warnings().is_empty());

        let old = Config::try_parse_from(["ssechat", "--trust-proxy"]).unwrap();
        let trusted = old.trusted_proxies();
        assert!(trusted.trusts("127.0.0.1".parse().unwrap()) && trusted.trusts("::1".parse().unwrap()));
        assert!(!trusted.trusts("10.0.0.1".parse().unwrap()), "no longer every peer");
        assert!(
            old.warnings()[0].contains("deprecated") && old.warnings()[0].contains("--trusted-proxy CIDR")
        );
    }

    #[test]
    fn public_urls_are_checked() {
        let url: PublicUrl = "https://Chat.Example/chat".parse().unwrap();
        assert!(url.site().admits("https://chat.example") && !url.site().admits("http://chat.example"));
        let url: PublicUrl = "http://127.0.0.1:8080".parse().unwrap();
        assert!(url.site().admits("http://127.0.0.1:8080") && !url.site().admits("http://127.0.0.1"));
        for bad in [
            "chat.example",
            "ftp://chat.example",
            "https://",
            "https://user@chat.example",
            "https://chat.example:99999",
            "https://chat.example/?a=b",
            "https://chat.example/#x",
            "/chat",
        ] {
            let err = bad.parse::<PublicUrl>().unwrap_err();
            assert!(err.contains(&format!("{bad:?} is not a public URL")), "{err}");
        }
        let bad = Config::try_parse_from(["ssechat", "--public-url", "chat.example"]).unwrap_err();
        assert!(bad.to_string().contains("must start with http:// or https://"), "{bad}");
    }

    #[test]
    fn allowed_hosts_repeat_or_comma_separate() {
        let c = Config::try_parse_from([
            "ssechat",
            "--allowed-host",
            "Chat.Example,[::1]",
            "--allowed-host",
            "b.example",
        ]);
        assert_eq!(c.unwrap().allowed_host, ["chat.example", "::1", "b.example"]);
        let bad = Config::try_parse_from(["ssechat", "--allowed-host", "https://chat.example"]).unwrap_err();
        assert!(bad.to_string().contains("is not a host name like chat.example"), "{bad}");
    }

    #[test]
    fn the_room_cap_is_the_memory_stores_and_a_warning_elsewhere() {
        let memory = Config::try_parse_from(["ssechat", "--store", "memory", "--max-rooms", "50"]).unwrap();
        assert_eq!(memory.retention().max_rooms, Some(50));
        assert!(memory.warnings().is_empty());
        let durable = Config::try_parse_from(["ssechat", "--max-rooms", "50"]).unwrap();
        assert_eq!(durable.retention().max_rooms, None);
        assert!(
            durable.warnings()[0].contains("--max-rooms (SSECHAT_MAX_ROOMS) applies to --store memory only")
        );
        assert!(Config::try_parse_from(["ssechat", "--max-rooms", "0"]).is_err());
    }

    #[test]
    fn retention_defaults_suit_the_store() {
        let durable = Config::try_parse_from(["ssechat", "--retain-for", "7d"]).unwrap();
        assert_eq!(durable.store, StoreUrl::Sqlite(PathBuf::from("ssechat.db")));
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        assert_eq!(durable.retention(), Retention { count: 10_000, age: week, max_rooms: None });
        let memory = Config::try_parse_from(["ssechat", "--store", "memory"]).unwrap();
        assert_eq!(memory.retention().count, 1_000);
        assert_eq!(memory.retention().max_rooms, Some(10_000));
        let aliased = Config::try_parse_from(["ssechat", "--history", "5"]).unwrap();
        assert_eq!(aliased.retention().count, 5);
    }
}
