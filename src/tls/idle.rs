//! `--idle-timeout` for a connection served by hyper over TLS, which has no such deadline of
//! its own: the requests in flight are counted (a stream's until its body is dropped), and
//! a connection with none for the idle timeout is closed gracefully.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::watch;

/// The requests in flight on one connection.
#[derive(Clone)]
pub struct InFlight(watch::Sender<usize>);

/// Held while a request is in flight: from its arrival until its answer's body is dropped.
pub struct Busy(watch::Sender<usize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl InFlight {
    pub fn new() -> Self {
        Self(watch::Sender::new(0))
    }

    /// Counts a request until the returned guard drops.
    pub fn begin(&self) -> Busy {
        self.0.send_modify(|n| *n += 1);
        Busy(self.0.clone())
    }

    /// Completes once nothing has been in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let mut count = self.0.subscribe();
        loop {
            if count.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => return,
                _ = count.changed() => {}
            }
        }
    }
}

/// `body`, keeping `busy` until hyper drops it (sent whole, or the client went away).
pub fn hold(body: Body, busy: Busy) -> Body {
    Body::new(body.map_frame(move |frame| {
        let _ = &busy;
        frame
    }))
}
