//! One module per endpoint, plus what they share: content negotiation and query parsing.

pub mod assets;
pub mod events;
pub mod health;
pub mod history;
pub mod index;
pub mod presence;
pub mod rooms;
pub mod send;

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::domain::{FieldError, MessageId};
use crate::error::AppError;

/// The index into `offered` the `Accept` header prefers. Ties go to the earlier offer, so
/// `*/*` (curl) picks the first; no `Accept` at all also picks the first.
pub fn negotiate(headers: &HeaderMap, offered: &[&str]) -> usize {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let quality = |offer: &str| -> f32 {
        let (offer_type, _) = offer.split_once('/').unwrap_or((offer, ""));
        // (specificity, q) of the most specific range that matches.
        let mut best: Option<(u8, f32)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .next()
                .unwrap_or(1.0);
            let specificity = if media == offer {
                3
            } else if media.strip_suffix("/*") == Some(offer_type) {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen = 0;
    let mut chosen_q = f32::MIN;
    for (i, offer) in offered.iter().enumerate() {
        let q = quality(offer);
        if q > chosen_q {
            chosen = i;
            chosen_q = q;
        }
    }
    chosen
}

/// True for a browser's form post or page load: `text/html` wins over JSON.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    negotiate(headers, &["application/json", "text/html"]) == 1
}

/// Query-string parameters, decoded once, with errors that name the parameter.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn from_uri(uri: &Uri) -> Result<Self, AppError> {
        serde_urlencoded::from_str(uri.query().unwrap_or(""))
            .map(Params)
            .map_err(|e| AppError::Malformed(format!("malformed query string: {e}")))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A `limit` parameter: `default` when absent, else 1 to `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, AppError> {
        let Some(value) = self.get("limit") else { return Ok(default) };
        match value.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(FieldError::new("limit", format!("{value:?} is not a number from 1 to {max}")).into()),
        }
    }

    /// A message id parameter such as `since`.
    pub fn id(&self, name: &'static str) -> Result<Option<MessageId>, AppError> {
        self.get(name).map(|v| parse_id(name, v)).transpose()
    }
}

pub fn parse_id(name: &'static str, value: &str) -> Result<MessageId, AppError> {
    value.trim().parse().map_err(|_| {
        AppError::Invalid(FieldError::new(
            name,
            format!("{value:?} is not a message id (a whole number, 0 or more)"),
        ))
    })
}

pub async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let message = format!("no such page: {} {}", method, uri.path());
    if prefers_html(&headers) {
        index::error_page(axum::http::StatusCode::NOT_FOUND, &message, "")
    } else {
        AppError::NotFound(message).into_response()
    }
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    AppError::MethodNotAllowed(format!("{} does not accept {}", uri.path(), method)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn negotiation() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(&accept(browser)));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&HeaderMap::new()));
        let streams = ["text/event-stream", "application/x-ndjson", "text/plain"];
        assert_eq!(negotiate(&accept("text/event-stream"), &streams), 0);
        assert_eq!(negotiate(&accept("*/*"), &streams), 0);
        assert_eq!(negotiate(&accept("text/plain"), &streams), 2);
        assert_eq!(negotiate(&accept("application/x-ndjson"), &streams), 1);
        assert_eq!(negotiate(&accept("text/*;q=0.5, application/x-ndjson;q=0.4"), &streams), 0);
        assert_eq!(negotiate(&accept(browser), &streams), 0);
    }
}
