//! `GET /events?room=R&since=ID`: the live stream, as SSE, NDJSON or plain text.
//!
//! Most streams never reach this handler: `fast_path.rs` serves a connection that opens with
//! `GET /events` straight on its socket. Both read the request with [`feed_request`] and
//! answer with [`STREAM_HEADERS`], so they behave the same; this handler serves the rest
//! (a stream opened on a keep-alive connection, `oneshot` tests) and every error.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{Client, Params, negotiate, parse_id};
use crate::domain::{Author, FieldError, RoomName};
use crate::error::AppError;
use crate::feed::{self, FeedRequest};
use crate::state::AppState;
use crate::wire::Format;

/// Headers of every stream response, besides its content type: no caching, no transforming,
/// and no buffering by nginx.
pub const STREAM_HEADERS: [(&str, &str); 2] =
    [("cache-control", "no-cache, no-transform"), ("x-accel-buffering", "no")];

pub async fn events(
    State(state): State<AppState>,
    Client(client): Client,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let request = feed_request(&uri, &headers, client)?;
    let format = request.format;
    let stream = feed::open(&state, request).await?;
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    for (name, value) in STREAM_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

/// What a stream request asks for: room, resume point and format.
pub fn feed_request(
    uri: &Uri,
    headers: &HeaderMap,
    client: std::net::IpAddr,
) -> Result<FeedRequest, AppError> {
    let params = Params::from_uri(uri)?;
    let room = RoomName::parse(params.get("room").unwrap_or(RoomName::DEFAULT))?;
    // What EventSource sends on reconnect is newer than the `since` the page started with.
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) if v.trim().is_empty() => None,
        Some(Ok(v)) => Some(parse_id("Last-Event-ID", v)?),
        Some(Err(_)) => return Err(parse_id("Last-Event-ID", "(not text)").unwrap_err()),
    };
    let resume_from = last_event_id.or(params.id("since")?);
    let offered = Format::MEDIA_TYPES.map(|(media, _)| media);
    let format = Format::MEDIA_TYPES[negotiate(headers, &offered)].1;
    let reader = match params.get("name").map(str::trim) {
        None | Some("") => None,
        Some(name) => Some(Author::parse(name).map_err(|e| FieldError::new("name", e.problem))?),
    };
    let presence = matches!(params.get("presence"), Some("1" | "true" | "yes"));
    Ok(FeedRequest { room, resume_from, format, reader, presence, client })
}
