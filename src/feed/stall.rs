//! The stall cut-off for a stream served through hyper over TLS, one per stream: over
//! HTTP/2 many streams share a connection, and a client that stops reading one of them
//! (its flow-control window stays shut) must not hold up the others nor keep that one open.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

use super::Feed;
use crate::metrics::Disconnect;

/// `--stall-timeout` for a stream whose connection has no socket-level cut-off. A request
/// extension.
#[derive(Clone, Copy, Debug)]
pub struct StreamStall(pub Duration);

/// The feed as a body that hyper takes from one chunk at a time. The feed runs ahead in a
/// task of its own; when hyper has not taken the previous chunk within `stall` (the
/// client's window for this stream stays shut), the stream ends as stalled. A body dropped
/// by hyper (the client reset the stream or left) ends the feed at once.
pub fn body(mut feed: Feed, StreamStall(stall): StreamStall) -> Body {
    let (chunks, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        loop {
            let bytes = tokio::select! {
                bytes = feed.next() => bytes,
                _ = chunks.closed() => return,
            };
            let Some(bytes) = bytes else { return };
            match chunks.send_timeout(bytes, stall).await {
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(_)) => return feed.end(Disconnect::Stall),
                Err(SendTimeoutError::Closed(_)) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Body::from_stream(stream)
}
