//! Spawns the real server on 127.0.0.1:0 and speaks real HTTP to it, with a real SSE parser.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use ssechat::config::StoreUrl;
use ssechat::domain::Message;
use ssechat::{AppState, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a test's accept loop waits on to stop.
pub type Shutdown = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Held by the tests that load this process with thousands of sockets or rooms, and by the
/// one that measures this process's memory, so that they never run at the same time.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Long enough for a loaded CI machine; only reached when something is wrong.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// Checks `condition` until it holds, for state that changes without an event to await
/// (a count, a server noticing a closed socket); panics after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(WAIT, what, condition).await
}

/// [`eventually`], for at most `limit`.
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let outcome = tokio::time::timeout(limit, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "timed out waiting for {what}");
}

/// The defaults, with the memory store and no send or per-client stream limit: tests post
/// fast from one address, and the limits have tests of their own. Raw requests say
/// `host: x`, so `x` is an allowed host besides loopback (the host check has its tests).
pub fn test_config() -> Config {
    init_logs();
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".into();
    config.allowed_host = vec!["x".into()];
    config.store = StoreUrl::Memory;
    config.send_rate = 1_000_000.0;
    config.send_burst = 1_000_000;
    config.max_streams_per_client = 100_000;
    config.max_connections_per_client = 100_000;
    config.drain_timeout = std::time::Duration::from_millis(200);
    config
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter("ssechat=debug").with_test_writer().init();
        }
    });
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        configure(&mut config);
        let state = AppState::new(config).await.expect("app starts");
        Self::serve(state).await
    }

    /// Serves an app whose state the test built itself.
    pub async fn serve(state: AppState) -> Self {
        Self::serve_on(state, "127.0.0.1:0").await
    }

    /// Serves on a given address (a restart on the same port, as a browser sees it).
    pub async fn serve_on(state: AppState, addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self::serve_by(listener, state, base, client, ssechat::run)
    }

    /// Serves with another accept loop (`run` given the listener, the state and the shutdown
    /// future), reached at `base` through `client`: HTTPS, for example.
    pub fn serve_by<F, Fut>(
        listener: tokio::net::TcpListener,
        state: AppState,
        base: String,
        client: reqwest::Client,
        run: F,
    ) -> Self
    where
        F: FnOnce(tokio::net::TcpListener, AppState, Shutdown) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let server = tokio::spawn(run(listener, state.clone(), shutdown));
        TestApp { addr, base, client, state, stop: Some(stop), server: Some(server) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_json(&self, body: Value) -> reqwest::Response {
        self.client.post(self.url("/send")).json(&body).send().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(self.url(path)).form(form).send().await.unwrap()
    }

    /// Posts a form the way a browser without JavaScript does.
    pub async fn post_as_browser(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        self.client.post(self.url(path)).header("accept", accept).form(form).send().await.unwrap()
    }

    /// Posts a message and returns it as stored.
    pub async fn say(&self, room: &str, author: &str, text: &str) -> Message {
        let response = self.post_json(json!({ "room": room, "author": author, "text": text })).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    /// Posts `count` messages to `room` as `author` ("`prefix` 0", "`prefix` 1"...), retrying
    /// each until it is stored (the store is coming back): what was stored, in order.
    pub async fn say_once_back(&self, room: &str, author: &str, prefix: &str, count: usize) -> Vec<Message> {
        let mut stored = Vec::new();
        tokio::time::timeout(WAIT, async {
            while stored.len() < count {
                let text = format!("{prefix} {}", stored.len());
                let response = self.post_json(json!({ "room": room, "author": author, "text": text })).await;
                if response.status() == 201 {
                    stored.push(response.json::<Message>().await.unwrap());
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .await
        .expect("sends work again once the store is back");
        stored
    }

    /// Where `room`'s ids start: its next message gets this plus one, if nobody posted to it
    /// yet. The memory store starts each life high (`first_id_base`), SQLite at 0.
    pub async fn id_base(&self, room: &str) -> u64 {
        let room = ssechat::domain::RoomName::parse(room).unwrap();
        self.state.store.read(&room, ssechat::store::Range::Latest, 0).await.unwrap().last_id
    }

    pub async fn history(&self, room: &str) -> Vec<Message> {
        self.get(&format!("/history?room={room}&since=0&limit=1000")).await.json().await.unwrap()
    }

    /// Opens `/events` with `query` and extra headers; the response has started when this returns.
    pub async fn events(&self, query: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut request = self.client.get(self.url(&format!("/events{query}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(WAIT, request.send()).await.expect("stream opens").unwrap();
        assert_eq!(response.status(), 200);
        EventStream::new(response)
    }

    /// An SSE stream that has received its preamble, so it is surely subscribed.
    pub async fn subscribe(&self, query: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut stream = self.events(query, headers).await;
        let first = stream.next_block().await.expect("preamble");
        assert!(first.retry.is_some(), "stream opens with retry: {first:?}");
        stream
    }

    /// Stops the server the way Ctrl-C does and waits for `run` to return.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let server = self.server.take().unwrap();
        tokio::time::timeout(WAIT, server).await.expect("run returns after shutdown").unwrap().unwrap();
    }
}

/// One SSE block: the fields up to a blank line.
#[derive(Debug, Default, Clone)]
pub struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<u64>,
    pub comments: Vec<String>,
}

impl Block {
    pub fn message(&self) -> Message {
        assert_eq!(self.event.as_deref(), Some("message"), "{self:?}");
        let message: Message = serde_json::from_str(self.data.as_deref().unwrap()).unwrap();
        assert_eq!(self.id.as_deref(), Some(message.id.to_string().as_str()));
        message
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap()).unwrap()
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// A response body read as it arrives: SSE blocks or lines.
pub struct EventStream {
    pub headers: reqwest::header::HeaderMap,
    body: ByteStream,
    buf: Vec<u8>,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> Self {
        let headers = response.headers().clone();
        Self::from_body(headers, response.bytes_stream().map(|r| r.map_err(|e| e.to_string())))
    }

    /// Reads any byte stream, such as a feed taken straight from the library.
    pub fn from_body<E: ToString>(
        headers: reqwest::header::HeaderMap,
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Self {
        Self { headers, body: Box::pin(body.map(|r| r.map_err(|e| e.to_string()))), buf: Vec::new() }
    }

    /// The next line (without its ending), or `None` at end of stream. Panics after `WAIT`.
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.read_line()).await.expect("a line arrives in time")
    }

    async fn read_line(&mut self) -> Option<String> {
        loop {
            // SSE lines end in \n, \r\n or \r.
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                    // Wait to see whether a \n follows.
                } else {
                    let line = String::from_utf8(self.buf[..pos].to_vec()).expect("utf-8");
                    let skip =
                        if self.buf[pos] == b'\r' && self.buf.get(pos + 1) == Some(&b'\n') { 2 } else { 1 };
                    self.buf.drain(..pos + skip);
                    return Some(line);
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next SSE block, or `None` at end of stream.
    pub async fn next_block(&mut self) -> Option<Block> {
        let mut block = Block::default();
        let mut any = false;
        loop {
            let line = self.next_line().await?;
            if line.is_empty() {
                if any {
                    return Some(block);
                }
                continue;
            }
            any = true;
            if let Some(comment) = line.strip_prefix(':') {
                block.comments.push(comment.trim().to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => block.id = Some(value),
                "event" => block.event = Some(value),
                "data" => {
                    block.data = Some(match block.data.take() {
                        Some(d) => format!("{d}\n{value}"),
                        None => value,
                    })
                }
                "retry" => block.retry = Some(value.parse().expect("numeric retry")),
                other => panic!("unknown SSE field {other:?}"),
            }
        }
    }

    /// The next block that carries data (skipping heartbeats and `retry:`).
    pub async fn next_event(&mut self) -> Block {
        loop {
            let block = self.next_block().await.expect("stream still open");
            if block.data.is_some() {
                return block;
            }
        }
    }

    pub async fn next_message(&mut self) -> Message {
        self.next_event().await.message()
    }

    /// Asserts that no event arrives for a short while.
    pub async fn expect_quiet(&mut self) {
        let outcome = tokio::time::timeout(QUIET, async {
            loop {
                match self.next_block().await {
                    Some(b) if b.data.is_none() => continue,
                    other => return other,
                }
            }
        })
        .await;
        if let Ok(got) = outcome {
            panic!("expected nothing, got {got:?}");
        }
    }

    /// Reads to the end of the stream; panics if it does not end in time.
    pub async fn expect_end(&mut self) {
        tokio::time::timeout(WAIT, async { while self.read_line().await.is_some() {} })
            .await
            .expect("stream ends");
    }
}
