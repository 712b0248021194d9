//! Command-line flags. Every flag has an environment variable; defaults are constants.

use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_HISTORY: usize = 1_000;
pub const DEFAULT_BUFFER: usize = 1_024;
pub const DEFAULT_PAGE_MESSAGES: usize = 100;

/// ssechat: a real-time chat server over plain HTTP and Server-Sent Events.
#[derive(Debug, Clone, Parser)]
#[command(name = "ssechat", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SSECHAT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Where history lives: `memory` (lost on restart).
    #[arg(long, env = "SSECHAT_STORE", default_value = "memory")]
    pub store: StoreUrl,

    /// Messages kept per room by the memory store.
    #[arg(long, env = "SSECHAT_HISTORY", default_value_t = DEFAULT_HISTORY, value_parser = positive)]
    pub history: usize,

    /// Messages shown on a room page when it is opened.
    #[arg(long, env = "SSECHAT_PAGE_MESSAGES", default_value_t = DEFAULT_PAGE_MESSAGES, value_parser = positive)]
    pub page_messages: usize,

    /// How often an idle event stream sends a comment, so proxies keep it open.
    #[arg(long, env = "SSECHAT_HEARTBEAT", default_value = "15s", value_parser = positive_duration)]
    pub heartbeat: Duration,

    /// How long an EventSource waits before reconnecting (sent as `retry:`).
    #[arg(long, env = "SSECHAT_RETRY", default_value = "3s", value_parser = positive_duration)]
    pub retry: Duration,

    /// Frames a room buffers for its slowest reader; one further behind catches up from history.
    #[arg(long, env = "SSECHAT_BUFFER", default_value_t = DEFAULT_BUFFER, value_parser = positive)]
    pub buffer: usize,

    /// On Ctrl-C or SIGTERM, how long open connections get to finish before the server exits.
    #[arg(long, env = "SSECHAT_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log filter, in `tracing` syntax (for example `info` or `ssechat=debug`). Logs go to stderr.
    #[arg(long, env = "SSECHAT_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// The defaults, as if started with no flags and no environment: for tests and embedding.
    pub fn defaults() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            store: StoreUrl::Memory,
            history: DEFAULT_HISTORY,
            page_messages: DEFAULT_PAGE_MESSAGES,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            buffer: DEFAULT_BUFFER,
            shutdown_timeout: Duration::from_secs(5),
            log: "info".to_owned(),
        }
    }
}

/// The `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Memory,
}

impl FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(StoreUrl::Memory),
            other => Err(format!("unknown store {other:?}; expected `memory`")),
        }
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".to_owned()),
        Err(e) => Err(format!("{s:?} is not a duration like 15s or 2m: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_flags() {
        let parsed = Config::try_parse_from(["ssechat"]).unwrap();
        let defaults = Config::defaults();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["ssechat", "--heartbeat", "0s"]).is_err());
        assert!(Config::try_parse_from(["ssechat", "--history", "0"]).is_err());
        assert!(Config::try_parse_from(["ssechat", "--store", "mongodb://x"]).is_err());
        let c = Config::try_parse_from(["ssechat", "--heartbeat", "2m", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(120));
    }
}
