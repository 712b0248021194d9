//! The one error type of the HTTP layer: it alone decides status codes.
//!
//! Client errors say what was wrong (and which field); internal causes are logged and
//! replaced by a generic sentence.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{FieldError, IdempotencyKey};
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// A field failed validation.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The body or query could not be decoded at all.
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Over a rate limit: try again after this many seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// Refused, and signing in may help (a guest where the rules want a user).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request is valid but the resource's state refuses it (an edit too late).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The client took too long to send its request (head or body); the connection closes.
    #[error("{0}")]
    RequestTimeout(String),
    /// For a host this server does not answer for (`--allowed-host`): DNS rebinding.
    #[error("{0}")]
    MisdirectedRequest(String),
    /// The store failed a read (or a write other than a send): it says nothing of saving.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store failed a send, certainly before saving it: "nothing was saved".
    #[error(transparent)]
    NotSaved(StoreError),
    /// The store may or may not have saved a message, and `--send-timeout` passed before
    /// that was settled: a retry under `key` finds out (and stores it if it wasn't).
    #[error("the outcome of a send is unknown: {cause}")]
    Unsettled { key: IdempotencyKey, cause: StoreError },
}

impl From<crate::policy::watch::Denial> for AppError {
    fn from(denial: crate::policy::watch::Denial) -> Self {
        if denial.sign_in {
            AppError::Unauthorized(denial.reason)
        } else {
            AppError::Forbidden(denial.reason)
        }
    }
}

/// What a client is told when the store can't answer (a read, or a write other than a send).
pub const STORE_UNAVAILABLE: &str = "the message store is unavailable right now; try again in a moment";

/// What a client is told when a send's outcome is unknown.
pub const UNSETTLED: &str =
    "the message may or may not have been saved; retry with the same Idempotency-Key header to find out";

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Invalid(_) | AppError::Malformed(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests(_) | AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            AppError::Store(_) | AppError::NotSaved(_) | AppError::Unsettled { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// A failed send under `key`: unknown outcomes carry the key, for the client's retry.
    pub fn sending(cause: StoreError, key: IdempotencyKey) -> Self {
        match cause {
            StoreError::Unknown(_) => Self::Unsettled { key, cause },
            certain => Self::Store(certain),
        }
    }

    /// This error as a send's answer: a store that was unavailable saved nothing.
    pub fn unsaved(self) -> Self {
        match self {
            AppError::Store(e @ StoreError::Unavailable(_)) => AppError::NotSaved(e),
            other => other,
        }
    }

    /// The key to retry with, when the outcome is unknown.
    pub fn unsettled_key(&self) -> Option<&IdempotencyKey> {
        match self {
            AppError::Unsettled { key, .. } => Some(key),
            _ => None,
        }
    }

    /// How many seconds a refused client should wait before trying again, if it says.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The headers that go with this error, whatever the body: JSON or a page.
    pub fn add_headers(&self, response: &mut Response) {
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, seconds.into());
        }
        if let Some(key) = self.unsettled_key() {
            let key = HeaderValue::from_str(key.as_str()).expect("a key is visible ASCII");
            headers.insert("idempotency-key", key);
        }
        if let AppError::Unauthorized(_) = self {
            // Bearer: a browser asks for nothing (`/login` is its way in).
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ssechat\""));
        }
        if let AppError::RequestTimeout(_) = self {
            // What is left of the request can't be told from the next one.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    /// The sentence a client sees.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Store(e @ StoreError::Unavailable(_)) => {
                tracing::error!(error = %e, "store failed");
                STORE_UNAVAILABLE.to_owned()
            }
            AppError::NotSaved(e) => {
                tracing::error!(error = %e, "store failed a send");
                "the message store is unavailable right now; nothing was saved, please retry".to_owned()
            }
            AppError::Store(e @ StoreError::Unknown(_)) | AppError::Unsettled { cause: e, .. } => {
                tracing::error!(error = %e, "store did not confirm a write");
                UNSETTLED.to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.public_message() });
        if let AppError::Invalid(e) = &self {
            body["field"] = json!(e.field);
        }
        let mut response = (self.status(), Json(body)).into_response();
        self.add_headers(&mut response);
        response
    }
}
