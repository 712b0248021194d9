//! One deadline for a whole request body (`--body-timeout`): a client that sends its body a
//! byte at a time can't hold a request (and its connection) open for long. The deadline
//! runs from when the head arrived, across every read of the body, and a body still
//! incomplete at it fails with [`BodyTimedOut`], which handlers answer with `408`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The error a body gives once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body took longer than {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// A request body that fails once `limit` has passed.
pub struct DeadlineBody {
    inner: Body,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    pub fn new(inner: Body, limit: Duration) -> Self {
        Self { inner, limit, deadline: Box::pin(tokio::time::sleep(limit)) }
    }
}

/// Puts every request's body under `limit`.
pub fn limit(limit: Duration) -> impl Fn(Request<Body>) -> Request<Body> + Clone {
    move |request| request.map(|body| Body::new(DeadlineBody::new(body, limit)))
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True if `error` (or what caused it) is a body deadline passing.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}
