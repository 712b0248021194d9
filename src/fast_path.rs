//! Streams served straight on the socket.
//!
//! A connection whose first request is a plain `GET /events` is a stream for the rest of its
//! life. Serving it through the general HTTP stack costs two 8 KiB buffers per connection and
//! a layer of machinery per message; here it costs the feed and a socket. The request is
//! read once with `httparse`; anything unusual (another path or method, a body, an upgrade,
//! HTTP/1.0, a request the handler would refuse) goes to hyper and the router unchanged, with
//! the bytes already read replayed in front of the socket.
//!
//! The response is the one `routes/events.rs` gives: the same headers, chunked body.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::feed;
use crate::metrics::Disconnect;
use crate::routes::SECURITY_HEADERS;
use crate::routes::events::{STREAM_HEADERS, feed_request};
use crate::state::AppState;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head read here; a larger one is left to hyper.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What the first request on a connection turned out to be.
pub enum FirstRequest {
    /// Served here, to the end.
    Served,
    /// Not for the fast path: serve this socket normally, replaying `head` first.
    Other(Rewind),
}

/// Reads the first request head and serves it here if it is a stream request.
pub async fn serve(mut socket: TcpStream, peer: SocketAddr, state: &AppState) -> FirstRequest {
    let stall = state.config.stall_timeout;
    let mut head = BytesMut::with_capacity(1024);
    let read = tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut socket, &mut head)).await;
    let other = |socket, head: BytesMut| FirstRequest::Other(Rewind::new(socket, head.freeze(), stall));
    if !matches!(read, Ok(Ok(true))) {
        // Timed out, closed, or too large: let hyper give the usual answer (or none).
        return other(socket, head);
    }
    let Some((uri, headers)) = stream_request(&head) else { return other(socket, head) };
    let client = state.client_of(peer, &headers);
    let Ok(request) = feed_request(&uri, &headers, client) else { return other(socket, head) };
    let format = request.format;
    let Ok(stream) = feed::open(state, request).await else { return other(socket, head) };
    drop(head);

    let mut response = format!("HTTP/1.1 200 OK\r\ncontent-type: {}\r\n", format.content_type());
    for (name, value) in STREAM_HEADERS.iter().chain(&SECURITY_HEADERS) {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("transfer-encoding: chunked\r\n\r\n");
    let metrics = &state.metrics;
    if socket.write_all(response.as_bytes()).await.is_err() {
        metrics.disconnected(Disconnect::Client);
        return FirstRequest::Served;
    }

    tokio::pin!(stream);
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            biased;
            item = stream.next() => match item {
                Some(Ok(bytes)) => match tokio::time::timeout(stall, write_chunk(&mut socket, &bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        metrics.disconnected(Disconnect::Client);
                        return FirstRequest::Served;
                    }
                    Err(_) => {
                        // Not reading: cut off. Its EventSource resumes from its last id.
                        metrics.disconnected(Disconnect::Stall);
                        return FirstRequest::Served;
                    }
                },
                None => break,
            },
            // A client that goes away is noticed now, not at the next write (a heartbeat
            // away), so its socket and subscription are freed at once. Anything it sends
            // after the request is ignored.
            read = socket.read(&mut scratch) => if matches!(read, Ok(0) | Err(_)) {
                metrics.disconnected(Disconnect::Client);
                return FirstRequest::Served;
            },
        }
    }
    // The stream ended (shutdown): close the body properly so the client reconnects.
    metrics.disconnected(Disconnect::Shutdown);
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
    FirstRequest::Served
}

/// Reads until the end of the request head. `Ok(false)`: closed or too large first.
async fn read_head(socket: &mut TcpStream, head: &mut BytesMut) -> io::Result<bool> {
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(true);
        }
        if head.len() >= MAX_HEAD || socket.read_buf(head).await? == 0 {
            return Ok(false);
        }
    }
}

/// The URI and headers of a plain `GET /events` over HTTP/1.1 with no body, else `None`.
pub fn stream_request(head: &[u8]) -> Option<(Uri, HeaderMap)> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut raw);
    let httparse::Status::Complete(len) = request.parse(head).ok()? else { return None };
    // Pipelined bytes after the head, or anything but a bodiless HTTP/1.1 GET of /events.
    if len != head.len() || request.method? != "GET" || request.version? != 1 {
        return None;
    }
    let uri: Uri = request.path?.parse().ok()?;
    if uri.path() != "/events" {
        return None;
    }
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        // A body, an upgrade, or a cross-origin request (CORS is the router's job).
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "upgrade" | "expect" | "origin") {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some((uri, headers))
}

/// One chunk of a chunked body, written from the shared frame without copying it.
async fn write_chunk(socket: &mut TcpStream, bytes: &Bytes) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(()); // an empty chunk would end the body
    }
    let mut size = [0u8; 18];
    let head = chunk_head(bytes.len(), &mut size);
    let parts: [&[u8]; 3] = [head, bytes, b"\r\n"];
    let total = head.len() + bytes.len() + 2;
    let written = socket.write_vectored(&parts.map(IoSlice::new)).await?;
    if written < total {
        // A socket buffer filled up part way: finish the rest as one plain write.
        let rest: Vec<u8> = parts.concat().split_off(written);
        socket.write_all(&rest).await?;
    }
    Ok(())
}

/// `<size in hex>\r\n`, written into `buf`.
fn chunk_head(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = b"0123456789abcdef"[(len >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// A socket with bytes already read from it put back in front, for hyper. It also gives
/// up on a client that takes more than the stall timeout to accept what is written, which
/// hyper itself never would.
pub struct Rewind {
    prefix: Bytes,
    socket: TcpStream,
    stall: Duration,
    /// Armed while a write is waiting for the socket.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Rewind {
    fn new(socket: TcpStream, prefix: Bytes, stall: Duration) -> Self {
        Self { prefix, socket, stall, stalled: None }
    }

    /// Passes a write's outcome through, turning a wait longer than the stall timeout
    /// into an error that closes the connection.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
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
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.socket).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.socket).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_head, stream_request};

    #[test]
    fn chunk_heads_are_hex() {
        for (len, expected) in [(0, "0\r\n"), (9, "9\r\n"), (255, "ff\r\n"), (4096, "1000\r\n")] {
            assert_eq!(chunk_head(len, &mut [0; 18]), expected.as_bytes());
        }
    }

    #[test]
    fn only_plain_stream_requests_take_the_fast_path() {
        let ok = b"GET /events?room=dev HTTP/1.1\r\nhost: x\r\nlast-event-id: 4\r\n\r\n";
        let (uri, headers) = stream_request(ok).unwrap();
        assert_eq!(uri.query(), Some("room=dev"));
        assert_eq!(headers["last-event-id"], "4");
        for other in [
            &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
            b"GET /events HTTP/1.0\r\nhost: x\r\n\r\n",
            b"GET /events HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n",
            b"GET /events HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n",
            b"GET /events HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /eventsX HTTP/1.1\r\n\r\n",
        ] {
            assert!(stream_request(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
