//! The accept loop: `run(listener, state, shutdown)`, and the process's shutdown signal.
//!
//! The listener and the shutdown future are injected, never made here, so the binary and
//! the tests run exactly the same server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::app::{AppState, router};
use crate::fast_path::{self, FirstRequest, Rewind};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until `shutdown` completes, then stops accepting, ends every open stream, and
/// gives the remaining requests up to `--shutdown-timeout` to finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    let stopping = state.shutdown.clone();
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
        let service = app.clone().map_request(move |mut req: axum::http::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let (stopping, state) = (stopping.clone(), state.clone());
        connections.spawn(async move {
            // A connection that opens with a stream request is served on the fast path.
            let FirstRequest::Other(socket) = fast_path::serve(socket, &state, HEADER_READ_TIMEOUT).await
            else {
                return;
            };
            serve_connection(socket, peer, TowerToHyperService::new(service), stopping).await;
        });
    }

    tracing::info!(open = connections.len(), "shutting down");
    state.shutdown.cancel();
    // Ends every stream, so none holds shutdown hostage.
    state.hub.close();
    connections.close();
    if tokio::time::timeout(state.config.shutdown_timeout, connections.wait()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open at the shutdown timeout; closing them"
        );
    }
    Ok(())
}

async fn serve_connection<S>(
    socket: Rewind,
    peer: SocketAddr,
    service: S,
    stopping: tokio_util::sync::CancellationToken,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping.cancelled() => {
            // Finish the response in flight (streams end on the same signal), then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Out of file descriptors (or similar) must not turn into a busy loop: wait a little.
async fn backoff_after_accept_error(e: &io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing before accepting again");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
