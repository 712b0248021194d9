//! One client connection over HTTP/1.1.
//!
//! Every request head is read here. A stream request (`GET /events`) is served straight on
//! the socket by `fast_path.rs`, whether it is the connection's first request or follows a
//! page load on the same keep-alive connection, as a browser's EventSource does. Any other
//! request is handed to hyper and the router for exactly that request, and the socket
//! comes back afterwards for the next one. A connection this loop can't follow (an oversized
//! head, HTTP/1.0, a chunked request body, pipelining) is left to hyper for the rest of its
//! life, which answers it as it always would.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::error::AppError;
use crate::fast_path;
use crate::feed::{Feed, Refused, StallWatch};
use crate::routes::events::feed_request;
use crate::state::AppState;

/// How long a client may take to send a request head, and how long an idle keep-alive
/// connection waits for the next one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head read here; a larger one is left to hyper.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `socket` until the client leaves, the connection fails, or shutdown.
pub async fn serve(socket: TcpStream, peer: SocketAddr, state: AppState, app: Router) {
    let mut connection = Connection { socket, buffered: BytesMut::with_capacity(1024), peer, state, app };
    loop {
        let head = tokio::time::timeout(HEADER_READ_TIMEOUT, connection.read_head()).await;
        let head = match head {
            Ok(Head::Complete(head)) => head,
            // Idle too long, closed, or shutting down while idle.
            Err(_) | Ok(Head::Closed) => return,
            Ok(Head::TooLarge) => return connection.hand_over_rest().await,
        };
        if !head.one_at_a_time {
            return connection.hand_over_rest().await;
        }
        let refused = match connection.open_stream(&head).await {
            Some(Ok(feed)) => {
                // A stream lives long: keep nothing of the connection but its socket.
                let Connection { mut socket, state, buffered, app, .. } = connection;
                drop((buffered, app));
                return fast_path::serve(&mut socket, feed, state.config.stall_timeout).await;
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        match connection.hand_over_one(&head, refused).await {
            Some(next) => connection = next,
            None => return,
        }
    }
}

struct Connection {
    socket: TcpStream,
    /// Bytes read from the socket and not yet used: the next request's head and beyond.
    buffered: BytesMut,
    peer: SocketAddr,
    state: AppState,
    app: Router,
}

/// What reading a request head gave.
enum Head {
    Complete(RequestHead),
    Closed,
    TooLarge,
}

/// A request head at the front of the buffer, as far as this loop needs to know it.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Its length in bytes.
    pub len: usize,
    /// The body that follows it, by `Content-Length`.
    pub body: u64,
    /// HTTP/1.1 with a known body length: after its response the connection can come
    /// back here for the next request.
    pub one_at_a_time: bool,
    /// The client asked to close after this request.
    pub close: bool,
}

impl Connection {
    /// Reads until the buffer holds a whole request head. While the connection is idle
    /// (nothing of the next request read yet), the end of draining closes it; during the
    /// drain it still gets an answer (with `connection: close`), not a reset.
    async fn read_head(&mut self) -> Head {
        loop {
            if let Some(head) = RequestHead::parse(&self.buffered) {
                return Head::Complete(head);
            }
            if self.buffered.len() >= MAX_HEAD {
                return Head::TooLarge;
            }
            let idle = self.buffered.is_empty();
            let read = tokio::select! {
                read = self.socket.read_buf(&mut self.buffered) => read,
                _ = self.state.stopped.cancelled(), if idle => return Head::Closed,
            };
            if matches!(read, Ok(0) | Err(_)) {
                return Head::Closed;
            }
        }
    }

    /// The feed for a plain stream request (`None`: not one), opened or refused. A refusal
    /// is answered by the router, which then doesn't try (or count) it again.
    async fn open_stream(&self, head: &RequestHead) -> Option<Result<Feed, AppError>> {
        let cors = !self.state.config.cors_origin.is_empty();
        let (uri, headers) = fast_path::stream_request(&self.buffered[..head.len], cors)?;
        // Pipelined requests after a stream would never be answered: hyper's job.
        if self.buffered.len() != head.len {
            return None;
        }
        let request = feed_request(&self.state, self.peer, &uri, &headers).ok()?;
        Some(Feed::open(&self.state, request).await)
    }

    /// Lets hyper and the router answer the request at the front of the buffer, then takes
    /// the socket back with whatever the client sent after it. `None`: the connection is over.
    async fn hand_over_one(self, head: &RequestHead, refused: Option<AppError>) -> Option<Self> {
        let Connection { socket, buffered, peer, state, app } = self;
        let keep_alive = !head.close && !state.shutdown.is_cancelled();
        let watch = Watch::default();
        let io = Rewind::new(socket, buffered.freeze(), state.config.stall_timeout, watch.clone());
        let service = RouterService::new(app.clone(), peer, &watch, refused);
        let mut http = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(keep_alive)
            .serve_connection(TokioIo::new(io), service);
        let outcome = one_response(&mut http, &watch).await;
        if let Err(e) = &outcome {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        let parts = http.into_parts();
        let io = parts.io.into_inner();
        // Reusable only if hyper read exactly this request and its body, and wrote its answer
        // without saying it would close.
        let consumed = io.fed - parts.read_buf.len() as u64;
        let whole = consumed == head.len as u64 + head.body;
        if outcome.is_err() || !keep_alive || !whole || !watch.wrote() {
            return None;
        }
        let mut buffered = BytesMut::with_capacity(1024);
        buffered.extend_from_slice(&parts.read_buf);
        buffered.extend_from_slice(&io.prefix);
        Some(Connection { socket: io.socket, buffered, peer, state, app })
    }

    /// Lets hyper serve the rest of the connection: for what this loop can't follow.
    async fn hand_over_rest(self) {
        let Connection { socket, buffered, peer, state, app } = self;
        let watch = Watch::default();
        let io = Rewind::new(socket, buffered.freeze(), state.config.stall_timeout, watch.clone());
        let draining = state.shutdown.is_cancelled();
        let http = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(!draining)
            .serve_connection(TokioIo::new(io), RouterService::new(app, peer, &watch, None));
        tokio::pin!(http);
        let result = tokio::select! {
            result = http.as_mut() => result,
            _ = state.stopped.cancelled(), if !draining => {
                // Finish the response in flight, then close.
                http.as_mut().graceful_shutdown();
                http.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// Drives hyper until it has answered one request. Once the answer has started, hyper is
/// told to stop after this response: it finishes it (without a `connection: close`, the
/// head being out already) and returns, leaving the socket open.
async fn one_response(
    http: &mut http1::Connection<TokioIo<Rewind>, RouterService>,
    watch: &Watch,
) -> hyper::Result<()> {
    let mut stopping = false;
    poll_fn(|cx| {
        loop {
            let poll = http.poll_without_shutdown(cx);
            if poll.is_ready() || stopping || !watch.wrote() {
                return poll;
            }
            Pin::new(&mut *http).graceful_shutdown();
            stopping = true;
        }
    })
    .await
}

/// What the router's answer to one request is, as hyper wants it.
type Answer = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

/// The router as a hyper service for one connection: each request learns its peer, the
/// connection's stall flag, and a refusal already decided on the fast path.
#[derive(Clone)]
struct RouterService {
    app: Router,
    peer: SocketAddr,
    stalled: StallWatch,
    refused: Option<Refused>,
}

impl RouterService {
    fn new(app: Router, peer: SocketAddr, watch: &Watch, refused: Option<AppError>) -> Self {
        Self { app, peer, stalled: StallWatch(Arc::clone(&watch.0.stalled)), refused: refused.map(Refused) }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for RouterService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Answer {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.stalled.clone());
        if let Some(refused) = &self.refused {
            request.extensions_mut().insert(refused.clone());
        }
        Box::pin(self.app.clone().oneshot(request))
    }
}

impl RequestHead {
    /// The head at the front of `buffered`, once it is all there.
    pub fn parse(buffered: &[u8]) -> Option<RequestHead> {
        let mut raw = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut raw);
        let len = match request.parse(buffered) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            // Malformed, or more headers than fit: hyper gives the answer.
            Err(_) => return Some(RequestHead::unusual(buffered)),
        };
        let mut body = 0;
        let mut known_length = true;
        let mut close = false;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse().ok()) {
                    Some(n) if body == 0 || body == n => body = n,
                    _ => known_length = false,
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                known_length = false;
            } else if header.name.eq_ignore_ascii_case("connection") {
                close |=
                    header.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        let one_at_a_time = request.version == Some(1) && known_length;
        Some(RequestHead { len, body, one_at_a_time, close })
    }

    fn unusual(buffered: &[u8]) -> RequestHead {
        RequestHead { len: buffered.len(), body: 0, one_at_a_time: false, close: true }
    }
}

/// What the connection learns from the socket while hyper has it.
#[derive(Clone, Default)]
struct Watch(Arc<WatchFlags>);

#[derive(Default)]
struct WatchFlags {
    /// Something was written: the answer has started.
    wrote: AtomicBool,
    /// The client stopped reading for the stall timeout.
    stalled: Arc<AtomicBool>,
}

impl Watch {
    fn wrote(&self) -> bool {
        self.0.wrote.load(Ordering::Relaxed)
    }
}

/// A socket with bytes already read from it put back in front, for hyper. It also gives
/// up on a client that takes more than the stall timeout to accept what is written, which
/// hyper itself never would.
struct Rewind {
    prefix: Bytes,
    socket: TcpStream,
    /// Bytes given to hyper, prefix included.
    fed: u64,
    stall: Duration,
    /// Armed while a write is waiting for the socket.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: Watch,
}

impl Rewind {
    fn new(socket: TcpStream, prefix: Bytes, stall: Duration, watch: Watch) -> Self {
        Self { prefix, socket, fed: 0, stall, stalled: None, watch }
    }

    /// Passes a write's outcome through, turning a wait longer than the stall timeout
    /// into an error that closes the connection.
    fn watch_write<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.watch.0.stalled.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut self.socket).poll_read(cx, buf)
        };
        self.fed += (buf.filled().len() - before) as u64;
        poll
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.watch.0.wrote.store(true, Ordering::Relaxed);
        let poll = Pin::new(&mut self.socket).poll_write(cx, buf);
        self.watch_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch.0.wrote.store(true, Ordering::Relaxed);
        let poll = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        self.watch_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.socket).poll_flush(cx);
        self.watch_write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::RequestHead;

    #[test]
    fn heads_tell_whether_the_connection_can_come_back() {
        let get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(
            RequestHead::parse(get),
            Some(RequestHead { len: get.len(), body: 0, one_at_a_time: true, close: false })
        );
        let post = b"POST /send HTTP/1.1\r\ncontent-length: 5\r\nconnection: keep-alive, Close\r\n\r\nhello";
        assert_eq!(
            RequestHead::parse(post),
            Some(RequestHead { len: post.len() - 5, body: 5, one_at_a_time: true, close: true })
        );
        assert_eq!(RequestHead::parse(b"GET / HTTP/1.1\r\nhost:"), None, "not all there yet");
        for unusual in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
        ] {
            let head = RequestHead::parse(unusual).unwrap();
            assert!(!head.one_at_a_time, "{}", String::from_utf8_lossy(unusual));
        }
    }
}
