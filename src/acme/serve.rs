//! A small accept loop for `--acme`: each connection's handshake through [`AcmeTls`], then
//! HTTP/1.1 or HTTP/2 (as ALPN chose) by hyper-util's auto builder, served by the router.
//!
//! Until the TLS listener of `--tls-cert` takes ACME's acceptor, this is what serves it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::{Accepted, AcmeTls};
use crate::app::router;
use crate::server::{SEND_BUFFER, backoff_after_accept_error};
use crate::state::AppState;

/// Serves HTTPS on `listener` until `shutdown` completes, then ends every open stream and
/// gives the remaining requests up to `--shutdown-timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: AcmeTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    backoff_after_accept_error(&e).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(SEND_BUFFER);
        connections.spawn(connection(socket, peer, tls.clone(), state.clone(), app.clone()));
    }
    state.shutdown.cancel();
    state.hub.close();
    state.stopped.cancel();
    connections.close();
    if tokio::time::timeout(state.config.shutdown_timeout, connections.wait()).await.is_err() {
        tracing::warn!(open = connections.len(), "connections still open at the shutdown timeout");
    }
    Ok(())
}

/// One connection: the handshake within `--header-timeout`, then HTTP until the client
/// leaves or the server stops.
async fn connection(socket: TcpStream, peer: SocketAddr, tls: AcmeTls, state: AppState, app: Router) {
    let stream = match tokio::time::timeout(state.config.header_timeout, tls.accept(socket)).await {
        Ok(Ok(Accepted::Client(stream))) => stream,
        Ok(Ok(Accepted::Challenge)) => return,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.header_timeout);
    let http = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(http);
    let result = tokio::select! {
        result = http.as_mut() => result,
        _ = state.stopped.cancelled() => {
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
