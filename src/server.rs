//! The accept loop: `run(listener, state, shutdown)`, and the process's shutdown signal.
//!
//! The listener and the shutdown future are injected, never made here, so the binary and
//! the tests run exactly the same server.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::router;
use crate::connection;
use crate::state::AppState;
use crate::tls;

/// The kernel's send buffer for each connection.
pub(crate) const SEND_BUFFER: usize = 64 * 1024;
/// How long a drain waits for the store to take this node's presence out.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until `shutdown` completes, then stops accepting, ends every open stream, and
/// gives the remaining requests up to `--shutdown-timeout` to finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    // Set when shutdown starts: streams drain until then, while the server still answers
    // (`/readyz` says 503, new streams are refused), so a load balancer can move clients.
    let mut draining: Option<tokio::time::Instant> = None;
    let mut check = tokio::time::interval(Duration::from_millis(20));

    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown, if draining.is_none() => {
                tracing::info!(open = connections.len(), "shutting down: draining streams");
                // Not ready any more; hyper connections finish what is in flight, then close.
                state.shutdown.cancel();
                // Other nodes stop counting this node's readers now (they count them for the
                // grace period, unless they reconnect there first). Before the streams are
                // told to end, so no reader reconnects elsewhere before it is handed over.
                let withdraw = state.presence.withdraw();
                if tokio::time::timeout(WITHDRAW_TIMEOUT, withdraw).await.is_err() {
                    tracing::warn!("withdrawing presence timed out; other nodes drop it when this node is gone");
                }
                // Streams end spread over the window, each with a jittered retry, so clients
                // don't all come back at the same moment.
                state.hub.drain(state.config.drain_timeout);
                draining = Some(tokio::time::Instant::now() + state.config.drain_timeout + Duration::from_millis(50));
                continue;
            }
            _ = check.tick(), if draining.is_some() => {
                if state.streams.open() == 0 || draining.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    backoff_after_accept_error(&e).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        // Bounded kernel buffering per connection: a reader that stops is found out (and
        // cut off after --stall-timeout) after 64 KiB, not after megabytes.
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(SEND_BUFFER);
        match &state.tls {
            Some(tls) => connections.spawn(tls::connection::serve(
                socket,
                peer,
                state.clone(),
                app.clone(),
                tls.clone(),
            )),
            None => connections.spawn(connection::serve(socket, peer, state.clone(), app.clone())),
        };
    }

    // Whatever stream is left is closed now, so none holds shutdown hostage, and idle
    // keep-alive connections close.
    state.hub.close();
    state.stopped.cancel();
    connections.close();
    if tokio::time::timeout(state.config.shutdown_timeout, connections.wait()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open at the shutdown timeout; closing them"
        );
    }
    Ok(())
}

/// Out of file descriptors (or similar) must not turn into a busy loop: wait a little.
pub(crate) async fn backoff_after_accept_error(e: &io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    // Out of file descriptors lasts while it lasts: say so once in a while, not 10 times a second.
    static LAST_LOGGED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    {
        let mut last = LAST_LOGGED.lock().expect("log throttle lock poisoned");
        if last.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::error!(error = %e, "accept failed; pausing 100 ms before each retry (logged every 10 s)");
        }
    }
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
