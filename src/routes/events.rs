//! `GET /events?room=R&since=ID`: the live stream, as SSE, NDJSON or plain text.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{Params, negotiate, parse_id};
use crate::app::AppState;
use crate::domain::RoomName;
use crate::error::AppError;
use crate::feed::{self, FeedRequest};
use crate::wire::Format;

pub async fn events(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let params = Params::from_uri(&uri)?;
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
    let format = Format::MEDIA_TYPES[negotiate(&headers, &offered)].1;

    let stream = feed::open(&state, FeedRequest { room, resume_from, format }).await?;
    let body = Body::from_stream(stream);
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
