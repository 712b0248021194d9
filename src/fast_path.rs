//! Streams served straight on the socket.
//!
//! A plain `GET /events` is a stream for the rest of its connection's life, whether it is
//! the connection's first request or comes after others (a browser opens its EventSource on
//! the connection that loaded the page). Serving it through the general HTTP stack costs
//! two 8 KiB buffers per connection and a layer of machinery per message; here it costs the
//! feed and a socket. `connection.rs` reads each request head and brings the stream
//! requests here; anything unusual goes to hyper and the router unchanged.
//!
//! The response head is the one `routes/events.rs` gives ([`stream_headers`]), chunked.
//! Streams over TLS are opened by the same [`open`] and served by hyper
//! (`tls/connection.rs`).

use std::io::{self, IoSlice};
use std::time::Duration;

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::AppError;
use crate::feed::Feed;
use crate::metrics::Disconnect;
use crate::routes::events::{feed_request, stream_headers};
use crate::state::AppState;

const MAX_HEADERS: usize = 32;

/// The feed for a plain stream request, opened, or refused (answered by the router, which
/// then doesn't try or count it again). `None`: one the router answers whole (a
/// misdirected request, a bad parameter). The same for streams over HTTP/1.1 on their
/// socket and over TLS (HTTP/2 included), where it spares a stream the router's layers.
pub async fn open(
    state: &AppState,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Result<Feed, AppError>> {
    // A misdirected request costs no store call: the router answers it.
    state.host_allowed(peer, headers).ok()?;
    // Who reads: the same function the router's sign-in layer calls.
    let signed_in = match crate::sign_in::identify(state, peer, headers).await {
        Ok(signed_in) => signed_in,
        Err(refused) => return Some(Err(refused)),
    };
    let request =
        feed_request(state, peer, uri, headers, &signed_in.identity, signed_in.credential).await.ok()?;
    Some(Feed::open(state, request).await)
}

/// Whether a request is a plain stream request: a bodiless `GET /events` with no upgrade.
/// With `cors` (origins allowed by `--cors-origin`), a request with an `Origin` is left to
/// the router, which answers CORS.
pub fn plain_stream(method: &Method, uri: &Uri, headers: &HeaderMap, cors: bool) -> bool {
    let unusual = |name: &HeaderName| {
        matches!(name.as_str(), "content-length" | "transfer-encoding" | "upgrade" | "expect")
            || (cors && name == header::ORIGIN)
    };
    method == Method::GET && uri.path() == "/events" && !headers.keys().any(unusual)
}

/// Writes the response head, then the feed, until the stream ends or the client leaves or
/// stops reading for `stall`.
pub async fn serve(socket: &mut TcpStream, mut feed: Feed, stall: Duration) {
    if socket.write_all(&stream_head(feed.format())).await.is_err() {
        return; // counted as the client leaving when the feed drops
    }
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            biased;
            bytes = feed.next() => match bytes {
                Some(bytes) => match tokio::time::timeout(stall, write_chunk(socket, &bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        // Not reading: cut off. Its EventSource resumes from its last id.
                        feed.end(Disconnect::Stall);
                        return;
                    }
                },
                None => break,
            },
            // A client that goes away is noticed now, not at the next write (a heartbeat
            // away), so its socket and subscription are freed at once. Anything it sends
            // after the request is ignored.
            read = socket.read(&mut scratch) => if matches!(read, Ok(0) | Err(_)) {
                return;
            },
        }
    }
    // The stream ended (shutdown): close the body properly so the client reconnects.
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

/// A stream's response head, chunked. Made and dropped before the stream starts: a stream
/// keeps nothing it doesn't need.
fn stream_head(format: crate::wire::Format) -> Vec<u8> {
    let mut headers = stream_headers(format);
    headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    response_head(StatusCode::OK, &headers)
}

/// A response head as written to the socket, for the answers given without hyper: a
/// stream's, and a refusal at accept.
pub fn response_head(status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The URI and headers of a plain stream request ([`plain_stream`]) over HTTP/1.1, else
/// `None`.
pub fn stream_request(head: &[u8], cors: bool) -> Option<(Uri, HeaderMap)> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut raw);
    let httparse::Status::Complete(len) = request.parse(head).ok()? else { return None };
    // Pipelined bytes after the head, or not HTTP/1.1.
    if len != head.len() || request.version? != 1 {
        return None;
    }
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let uri: Uri = request.path?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    plain_stream(&method, &uri, &headers, cors).then_some((uri, headers))
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
        let (uri, headers) = stream_request(ok, false).unwrap();
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
            assert!(stream_request(other, false).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
