//! One connection over TLS: the handshake, then hyper-util's auto builder serving HTTP/2
//! (ALPN `h2`) or HTTP/1.1 with the router. The plaintext fast path is for HTTP/1.1
//! without TLS only; here every request, streams included, goes through the router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use bytes::Bytes;

use super::HSTS;
use super::stall::StreamStall;
use crate::connection::io::{Rewind, Watch};
use crate::feed::StallWatch;
use crate::state::AppState;

/// Serves `socket` over TLS with `config` until the client leaves, the connection fails,
/// or the server has stopped. Counted in the connection caps from accept; a connection
/// over the caps is closed before the handshake (there is no plain answer to give it).
pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    state: AppState,
    app: Router,
    config: Arc<ServerConfig>,
) {
    let Ok(_permit) = crate::connection::admit(&state, peer) else { return };
    // A client that takes nothing of what is written for --stall-timeout is cut off, the
    // whole connection: the same socket wrapper as on the plaintext hyper path.
    let watch = Watch::default();
    let socket = Rewind::new(socket, Bytes::new(), state.config.stall_timeout, watch.clone());
    let handshake = TlsAcceptor::from(config).accept(socket);
    let stream = match tokio::time::timeout(state.config.header_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let stall = (StreamStall(state.config.stall_timeout), StallWatch(Arc::clone(&watch.0.stalled)));
    let service =
        hyper::service::service_fn(move |request| answer(app.clone(), peer, stall.clone(), request));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let http = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    let result = tokio::select! {
        result = http.as_mut() => result,
        _ = state.stopped.cancelled() => {
            // Finish what is in flight (streams have ended through the hub), then close.
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
    }
}

/// An HTTP/2 request names its host in `:authority`, not in a `Host` header: the host
/// check, the site of the CSRF check and the redirects read `Host`, so it is put there.
fn host_from_authority<B>(request: &mut hyper::Request<B>) {
    if request.headers().contains_key(header::HOST) {
        return;
    }
    let host = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        request.headers_mut().insert(header::HOST, host);
    }
}

/// The router's answer to one request over TLS, with HSTS. A stream's feed learns both
/// stall cut-offs: its own (per stream) and the connection's.
async fn answer(
    app: Router,
    peer: SocketAddr,
    (stall, watch): (StreamStall, StallWatch),
    mut request: hyper::Request<Incoming>,
) -> Result<axum::response::Response, Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    request.extensions_mut().insert(stall);
    request.extensions_mut().insert(watch);
    host_from_authority(&mut request);
    let mut response = app.oneshot(request).await?;
    response.headers_mut().insert("strict-transport-security", HeaderValue::from_static(HSTS));
    Ok(response)
}
