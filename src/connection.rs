//! One client connection over HTTP/1.1.
//!
//! Every request head is read here. A stream request (`GET /events`) is served straight on
//! the socket by `fast_path.rs`, whether it is the connection's first request or follows a
//! page load on the same keep-alive connection, as a browser's EventSource does. Any other
//! request is handed to hyper and the router for exactly that request, and the socket
//! comes back afterwards for the next one: hyper is given exactly that request's bytes, so
//! pipelined requests come back here one by one. A connection this loop can't follow (an
//! oversized head, HTTP/1.0, a chunked request body) is left to hyper for the rest of its
//! life, which answers it as it always would.
//!
//! Deadlines: a whole request head within `--header-timeout` (from accept, or from the first
//! byte of a later request), an idle keep-alive connection's next request within
//! `--idle-timeout`, a whole body within `--body-timeout` (the router's body layer). Every
//! connection is counted against `--max-connections` and `--max-connections-per-client`
//! from the moment it is accepted.

mod head;
pub(crate) mod io;
mod refusal;

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

pub use head::RequestHead;
use io::{Rewind, Watch};

use crate::error::AppError;
use crate::fast_path;
use crate::feed::{Feed, Refused, StallWatch};
use crate::limits::{Permit, client_key};
use crate::metrics::Limited;
use crate::routes::send::MAX_BODY;
use crate::state::AppState;

/// The largest request head read here; a larger one is left to hyper.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `socket` until the client leaves, the connection fails, or shutdown.
pub async fn serve(socket: TcpStream, peer: SocketAddr, state: AppState, app: Router) {
    let permit = match admit(&state, peer) {
        Ok(permit) => permit,
        Err(e) => return Box::pin(refusal::refuse(socket, &e)).await,
    };
    let buffered = BytesMut::with_capacity(1024);
    let mut connection = Connection { socket, buffered, peer, state, app, _permit: permit };
    let mut first = true;
    loop {
        let head = match connection.next_head(first).await {
            Head::Complete(head) => head,
            Head::Closed => return,
            Head::TimedOut => return Box::pin(connection.time_out()).await,
            Head::TooLarge => return Box::pin(connection.hand_over_rest()).await,
        };
        first = false;
        if !head.one_at_a_time {
            return Box::pin(connection.hand_over_rest()).await;
        }
        let refused = match Box::pin(connection.open_stream(&head)).await {
            Some(Ok(feed)) => return connection.stream(feed).await,
            Some(Err(e)) => Some(e),
            None => None,
        };
        // Boxed, like every path but the stream's: the task of a connection that turns into a
        // long-lived stream is no larger than the stream needs.
        match Box::pin(connection.hand_over_one(&head, refused)).await {
            Some(next) => connection = next,
            None => return,
        }
    }
}

/// Counts a new connection against the caps, or refuses it. A trusted proxy speaks for many
/// clients: only the total counts for it.
pub(crate) fn admit(state: &AppState, peer: SocketAddr) -> Result<Permit, AppError> {
    let client = (!state.proxies.trusts(peer.ip())).then(|| client_key(peer.ip()));
    state.connections.admit(client).inspect_err(|_| state.metrics.limited(Limited::Connections))
}

struct Connection {
    socket: TcpStream,
    /// Bytes read from the socket and not yet used: the next request's head and beyond.
    buffered: BytesMut,
    peer: SocketAddr,
    state: AppState,
    app: Router,
    /// Counted in the connection caps while it lives.
    _permit: Permit,
}

/// What reading a request head gave.
enum Head {
    Complete(RequestHead),
    /// Closed by the client, idle too long, or idle at the end of a shutdown.
    Closed,
    /// Part of a head came, the rest not within `--header-timeout`.
    TimedOut,
    TooLarge,
}

impl Connection {
    /// The next request's head. A later request first gets `--idle-timeout` to start; the
    /// head itself (the first one: from accept) gets `--header-timeout`, whole.
    async fn next_head(&mut self, first: bool) -> Head {
        let config = Arc::clone(&self.state.config);
        if !first && self.buffered.is_empty() {
            let started = tokio::time::timeout(config.idle_timeout, self.fill()).await;
            if !matches!(started, Ok(true)) {
                return Head::Closed;
            }
        }
        match tokio::time::timeout(config.header_timeout, self.read_head()).await {
            Ok(head) => head,
            Err(_) if self.buffered.is_empty() => Head::Closed,
            Err(_) => Head::TimedOut,
        }
    }

    /// Reads until the buffer holds a whole request head.
    async fn read_head(&mut self) -> Head {
        loop {
            if let Some(head) = RequestHead::parse(&self.buffered) {
                return Head::Complete(head);
            }
            if self.buffered.len() >= MAX_HEAD {
                return Head::TooLarge;
            }
            if !self.fill().await {
                return Head::Closed;
            }
        }
    }

    /// Reads what the client sent next; false once it closed. While the connection is idle
    /// (nothing of the next request read yet), the end of draining closes it; during the
    /// drain it still gets an answer (with `connection: close`), not a reset.
    async fn fill(&mut self) -> bool {
        let idle = self.buffered.is_empty();
        tokio::select! {
            read = self.socket.read_buf(&mut self.buffered) => matches!(read, Ok(n) if n > 0),
            _ = self.state.stopped.cancelled(), if idle => false,
        }
    }

    /// A head that did not arrive in time gets `408` and the connection closes.
    async fn time_out(self) {
        let message = format!("the request head took longer than {:?}", self.state.config.header_timeout);
        refusal::refuse(self.socket, &AppError::RequestTimeout(message)).await;
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
        fast_path::open(&self.state, self.peer, &uri, &headers).await
    }

    /// Serves the stream to its end. A stream lives long: it keeps nothing of the
    /// connection but its socket and its place in the caps.
    async fn stream(self, feed: Feed) {
        let Connection { mut socket, state, buffered, app, _permit, .. } = self;
        drop((buffered, app));
        fast_path::serve(&mut socket, feed, state.config.stall_timeout).await;
    }

    /// Lets hyper and the router answer the request at the front of the buffer, then takes
    /// the socket back with whatever the client sent after it. `None`: the connection is over.
    async fn hand_over_one(self, head: &RequestHead, refused: Option<AppError>) -> Option<Self> {
        let Connection { socket, buffered, peer, state, app, _permit } = self;
        let keep_alive = !head.close && !state.shutdown.is_cancelled();
        let watch = Watch::default();
        let io = Rewind::new(socket, buffered.freeze(), state.config.stall_timeout, watch.clone())
            .limited(head.len as u64 + head.body);
        // A body larger than any this server reads is not skipped afterwards: say close.
        let close = head.body > MAX_BODY as u64;
        let service = RouterService::new(app.clone(), peer, &watch, refused, close);
        let mut http = hyper_connection(&state, io, service, keep_alive);
        let outcome = one_response(&mut http, &watch).await;
        if let Err(e) = &outcome {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        let parts = http.into_parts();
        let io = parts.io.into_inner();
        // What hyper left unread of this request's body, if it answered without reading it all.
        let consumed = io.fed - parts.read_buf.len() as u64;
        let unread = (head.len as u64 + head.body).saturating_sub(consumed);
        let mut buffered = BytesMut::with_capacity(1024);
        buffered.extend_from_slice(&parts.read_buf);
        buffered.extend_from_slice(&io.prefix);
        let mut socket = io.socket;
        let reusable = outcome.is_ok() && keep_alive && !watch.closing() && watch.wrote();
        if !reusable || !refusal::skip(&mut socket, &mut buffered, unread, state.config.body_timeout).await {
            refusal::linger(socket).await;
            return None;
        }
        Some(Connection { socket, buffered, peer, state, app, _permit })
    }

    /// Lets hyper serve the rest of the connection: for what this loop can't follow.
    async fn hand_over_rest(self) {
        let Connection { socket, buffered, peer, state, app, _permit } = self;
        let watch = Watch::default();
        let io = Rewind::new(socket, buffered.freeze(), state.config.stall_timeout, watch.clone());
        let draining = state.shutdown.is_cancelled();
        let http =
            hyper_connection(&state, io, RouterService::new(app, peer, &watch, None, false), !draining);
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

/// Hyper's HTTP/1.1 server on `io`, with the head deadline of `--header-timeout`.
fn hyper_connection(
    state: &AppState,
    io: Rewind,
    service: RouterService,
    keep_alive: bool,
) -> http1::Connection<TokioIo<Rewind>, RouterService> {
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(io), service)
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
/// connection's stall flag, and a refusal already decided on the fast path; with `close`,
/// the answer says `connection: close`.
#[derive(Clone)]
struct RouterService {
    app: Router,
    peer: SocketAddr,
    watch: Watch,
    refused: Option<Refused>,
    close: bool,
}

impl RouterService {
    fn new(app: Router, peer: SocketAddr, watch: &Watch, refused: Option<AppError>, close: bool) -> Self {
        Self { app, peer, watch: watch.clone(), refused: refused.map(Refused), close }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for RouterService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Answer {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(StallWatch(Arc::clone(&self.watch.0.stalled)));
        if let Some(refused) = &self.refused {
            request.extensions_mut().insert(refused.clone());
        }
        let answer = self.app.clone().oneshot(request);
        let (close, watch) = (self.close, self.watch.clone());
        Box::pin(async move {
            let mut response = answer.await?;
            if close {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // An answer that says close (a timeout, a body too large) ends the connection.
            let closing = response.headers().get(header::CONNECTION).is_some_and(|v| v == "close");
            watch.0.closing.store(closing, std::sync::atomic::Ordering::Relaxed);
            Ok(response)
        })
    }
}
