//! Ending a connection politely: a refusal answered before anything is read (over a cap, a
//! head too slow), a body left unread skipped so the connection can go on, and a lingering
//! close, so that what the client was still sending doesn't turn our answer into a reset.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use axum::http::{HeaderMap, HeaderValue, header};

use crate::error::AppError;
use crate::fast_path::response_head;
use crate::routes::SECURITY_HEADERS;

/// How long a closing connection keeps reading (and dropping) what the client still sends.
const LINGER: Duration = Duration::from_secs(1);
/// How much it reads then at most.
const LINGER_BYTES: usize = 64 * 1024;

/// Answers `error` with `connection: close`, whatever the client sent or is sending, then
/// closes.
pub async fn refuse(mut socket: TcpStream, error: &AppError) {
    let _ = socket.write_all(&response(error)).await;
    linger(socket).await;
}

/// The whole response to `error`: the JSON error body the router would give.
fn response(error: &AppError) -> Vec<u8> {
    let body = serde_json::json!({ "error": error.public_message() }).to_string();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, body.len().into());
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(seconds) = error.retry_after() {
        headers.insert(header::RETRY_AFTER, seconds.into());
    }
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    [response_head(error.status(), &headers), body.into_bytes()].concat()
}

/// Says we are done writing, then reads and drops what the client still sends for a
/// moment, so a response already sent is read before the connection goes.
pub async fn linger(mut socket: TcpStream) {
    let _ = socket.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        // Small, and on the heap only while lingering: a flood of refused connections
        // lingers at once.
        let mut buf = vec![0u8; 512];
        let mut read = 0;
        while read < LINGER_BYTES {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// Drops the `unread` body bytes that follow: first from `buffered`, then from the socket,
/// within `deadline`. False if they did not come.
pub async fn skip(socket: &mut TcpStream, buffered: &mut BytesMut, unread: u64, deadline: Duration) -> bool {
    let from_buffer = (unread as usize).min(buffered.len());
    buffered.advance(from_buffer);
    let mut left = unread as usize - from_buffer;
    tokio::time::timeout(deadline, async {
        while left > 0 {
            // Read into the buffer, keeping only what follows the body.
            match socket.read_buf(buffered).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {
                    let skipped = left.min(buffered.len());
                    buffered.advance(skipped);
                    left -= skipped;
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false)
}
