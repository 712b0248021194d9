//! `fanout --h2`: each stream one HTTP/2 request over TLS, `--streams` spread over
//! `--connections`, as a browser shares one connection among a site's streams. Counting and
//! timing are the HTTP/1.1 path's own (`fanout::scan`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::mpsc::unbounded_channel;

use crate::fanout::{
    FanoutArgs, Opened, Shared, gather_opened, report_open, room_name, scan, source_address,
};
use crate::http::Endpoint;
use crate::open::connect_from;
use crate::tls::{Alpn, Tls};

/// Opens `--connections` HTTP/2 connections, then every stream on them in turn; each stream
/// then reads until the run is over. Returns once every stream has its response head or failed.
pub async fn open_all(
    args: &FanoutArgs,
    endpoint: &Endpoint,
    tls: &Tls,
    prefix: &str,
    shared: &Arc<Shared>,
) -> Result<Opened, String> {
    let server = endpoint.resolve().await?;
    let started = Instant::now();
    let mut connections = Vec::new();
    for c in 0..args.connections.max(1) {
        connections.push(connect(endpoint, tls, source_address(c, args.sources), server).await?);
    }
    let (ready_tx, ready_rx) = unbounded_channel();
    for n in 0..args.streams {
        let mut sender = connections[n % connections.len()].clone();
        let path = endpoint.stream_path(args.target, &room_name(prefix, n, args.rooms));
        let request = Request::get(format!("{}{path}", endpoint.origin()))
            .header("accept", "text/event-stream")
            .body(Empty::new())
            .map_err(|e| format!("stream request: {e}"))?;
        let (shared, ready) = (Arc::clone(shared), ready_tx.clone());
        tokio::spawn(async move {
            if let Some(body) = report_open(&shared, &ready, open(&mut sender, request).await) {
                read_body(body, n, &shared).await;
            }
        });
    }
    drop(ready_tx);
    gather_opened(args.streams, ready_rx, started).await
}

/// A TLS connection from `source` that agreed to HTTP/2 by ALPN.
async fn connect(
    endpoint: &Endpoint,
    tls: &Tls,
    source: std::net::Ipv4Addr,
    server: SocketAddr,
) -> Result<SendRequest<Empty<Bytes>>, String> {
    let tcp = connect_from(source, server).await?;
    let stream = tls.connect(tcp, endpoint, Alpn::Http2).await?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(format!("{} did not agree to HTTP/2 (ALPN h2)", endpoint.authority));
    }
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends the stream request and waits for a 200 head.
async fn open(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<Incoming, String> {
    let response = sender.send_request(request).await.map_err(|e| format!("stream: {e}"))?;
    match response.status().as_u16() {
        200 => Ok(response.into_body()),
        status => Err(format!("stream answered {status}, not 200")),
    }
}

/// Reads DATA frames until the run is over, counting every marker seen.
async fn read_body(mut body: Incoming, index: usize, shared: &Shared) {
    let mut carry = Vec::new(); // a marker split across frames
    loop {
        let data = match body.frame().await {
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            Some(Err(_)) | None => {
                if !shared.done.load(Ordering::Relaxed) {
                    shared.broken.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let now_us = shared.started.elapsed().as_micros() as u64;
        carry.extend_from_slice(&data);
        let keep_from = scan(&carry, index, shared, now_us);
        carry.drain(..keep_from);
    }
}
