//! The one error type of the HTTP layer: it alone decides status codes.
//!
//! Client errors say what was wrong (and which field); internal causes are logged and
//! replaced by a generic sentence.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::FieldError;
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
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    /// For a host this server does not answer for (`--allowed-host`): DNS rebinding.
    #[error("{0}")]
    MisdirectedRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Invalid(_) | AppError::Malformed(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests(_) | AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            AppError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The sentence a client sees.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Store(e) => {
                tracing::error!(error = %e, "store failed");
                "the message store is unavailable right now; nothing was saved, please retry".to_owned()
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
        if let AppError::RateLimited { retry_after, .. } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after.into());
        }
        response
    }
}
