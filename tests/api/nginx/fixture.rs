//! The harness: a real nginx run the documented way, the README's several-nodes deployment,
//! and clients as browsers behave behind a proxy (each its own address, EventSource resume).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use ssechat::domain::Message;

use crate::helpers::{EventStream, WAIT};
use crate::process::{RedisServer, Server};

pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real nginx, started by `deploy/run-nginx.sh CONFIG PREFIX 127.0.0.1:PORT NODE...` (the
/// documented way to give a config its ports), stopped on drop.
pub struct Nginx {
    child: std::process::Child,
    pub base: String,
    prefix: tempfile::TempDir,
}

impl Nginx {
    /// Starts `deploy/CONFIG` on a free port in front of `nodes`; returns once it listens.
    pub async fn start(config: &str, nodes: &[&Server]) -> Nginx {
        // Private, as `mktemp -d` makes it: as root, run-nginx.sh must open it to the workers.
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        let prefix = tempfile::Builder::new().permissions(private).tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(repo_file("deploy/run-nginx.sh"))
            .arg(repo_file(&format!("deploy/{config}")))
            .arg(prefix.path())
            .arg(&listen)
            .args(nodes.iter().map(|node| node.addr()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("deploy/run-nginx.sh runs");
        let mut nginx = Nginx { child, base: format!("http://{listen}"), prefix };
        nginx.wait_until_listening().await;
        nginx
    }

    /// The master writes its pid file once its sockets listen; if it exits instead, says why.
    async fn wait_until_listening(&mut self) {
        let pid_file = self.prefix.path().join("nginx.pid");
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    let mut stderr = String::new();
                    std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr)
                        .unwrap();
                    panic!("nginx exited ({status}): {stderr}");
                }
                if let Ok(pid) = std::fs::read_to_string(&pid_file).unwrap_or_default().trim().parse::<u32>()
                {
                    return pid;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let pid = outcome.expect("nginx starts or exits");
        assert_eq!(pid, self.child.id(), "run-nginx.sh execs nginx, so stopping it stops nginx");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap()
    }

    /// nginx's own complaints: none may be critical (a temp file it could not write), an
    /// alert (a limit it could not set) or an emergency.
    pub fn assert_no_alerts(&self) {
        let log = self.error_log();
        let serious = ["[crit]", "[alert]", "[emerg]"];
        let alerts: Vec<&str> = log.lines().filter(|l| serious.iter().any(|s| l.contains(s))).collect();
        assert!(alerts.is_empty(), "nginx error log: {alerts:#?}");
    }
}

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers, then exits (a SIGKILL would leave the workers
    /// serving). SIGKILL only if it has not gone after `WAIT`.
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, not yet reaped, so it is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The README's "Running several nodes": one Redis, two nodes, `deploy/nginx.conf` in front.
/// Dropped in field order: nginx first, then the nodes, then Redis.
pub struct Deployment {
    pub nginx: Nginx,
    pub nodes: Vec<Server>,
    _redis: RedisServer,
}

impl Deployment {
    pub async fn start(node_args: &[&str]) -> Deployment {
        let redis = RedisServer::start(false);
        let args = [&["--store", redis.url.as_str()], node_args].concat();
        let nodes = vec![Server::start_deployed(&args).await, Server::start_deployed(&args).await];
        let nginx = Nginx::start("nginx.conf", &nodes.iter().collect::<Vec<_>>()).await;
        Deployment { nginx, nodes, _redis: redis }
    }
}

/// A client whose connections come from 127.0.0.`n`: to the proxy, another person.
pub fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn client() -> reqwest::Client {
    client_from(1)
}

/// A message from ana to room general, as JSON.
fn message(text: &str) -> Value {
    json!({ "room": "general", "author": "ana", "text": text })
}

pub async fn post_json(client: &reqwest::Client, url: &str, text: &str) -> reqwest::Response {
    client.post(url).json(&message(text)).send().await.unwrap()
}

/// Posts as the page's script does: one `Idempotency-Key`, retried while no node answers
/// (nginx answers 502 when a node dies with the post on its socket: a POST is never replayed).
pub async fn send(client: &reqwest::Client, url: &str, text: &str) -> Message {
    let body = message(text);
    let key = text.replace(' ', "-");
    let attempt = || client.post(url).header("idempotency-key", &key).json(&body).send();
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match attempt().await {
                Ok(r) if r.status().is_success() => return r.json::<Message>().await.unwrap(),
                Ok(r) if [502, 503].contains(&r.status().as_u16()) => {}
                Ok(r) => panic!("send refused: {} {:?}", r.status(), r.text().await),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    outcome.expect("a send gets through")
}

/// Opens a stream (resuming after `last_id`) and reads its preamble, so it is subscribed.
pub async fn open_stream(client: &reqwest::Client, url: &str, last_id: Option<u64>) -> EventStream {
    let mut request = client.get(url);
    if let Some(id) = last_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = tokio::time::timeout(WAIT, request.send()).await.expect("stream opens").unwrap();
    let status = response.status();
    assert_eq!(status, 200, "stream refused: {:?}", response.text().await);
    let mut stream = EventStream::new(response);
    let preamble = stream.next_block().await.expect("preamble");
    assert!(preamble.retry.is_some(), "stream opens with retry: {preamble:?}");
    stream
}

/// A reader that behaves like EventSource: when its stream ends, it reconnects with
/// `Last-Event-ID` (at once: waiting `retry:` proves nothing here).
pub struct Reader {
    client: reqwest::Client,
    url: String,
    pub stream: EventStream,
    last_id: Option<u64>,
    /// How often its stream ended and it opened another.
    pub reconnects: u32,
}

impl Reader {
    pub async fn open(client: reqwest::Client, url: String) -> Reader {
        let stream = open_stream(&client, &url, None).await;
        Reader { client, url, stream, last_id: None, reconnects: 0 }
    }

    pub async fn next_message(&mut self) -> Message {
        loop {
            match self.stream.next_block().await {
                Some(block) if block.data.is_some() => {
                    let message = block.message();
                    self.last_id = Some(message.id);
                    return message;
                }
                Some(_) => continue,
                None => {
                    self.stream = open_stream(&self.client, &self.url, self.last_id).await;
                    self.reconnects += 1;
                }
            }
        }
    }
}

/// Streams open on a node, from its `/metrics`.
pub async fn open_streams(node: &Server) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", node.base)).await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("ssechat_open_streams{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the nodes hold `total` streams between them, each at least one.
pub async fn wait_for_streams_on_every_node(nodes: &[Server], total: u64) {
    crate::helpers::eventually("streams on every node", || async {
        let counts = join_all(nodes.iter().map(open_streams)).await;
        counts.iter().sum::<u64>() == total && counts.iter().all(|&c| c > 0)
    })
    .await;
}
