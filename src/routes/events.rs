//! `GET /events?room=R&since=ID`: the live stream, as SSE, NDJSON or plain text.
//!
//! Most streams never reach this handler: `connection.rs` serves every plain `GET /events`
//! over HTTP/1.1 straight on its socket (`fast_path.rs`). Both read the request with
//! [`feed_request`], answer with [`stream_headers`] and send what [`Feed`] gives, so they
//! behave the same; this handler serves the rest (CORS requests, unusual connections,
//! `oneshot` tests) and every refusal.

use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{Params, Peer, SECURITY_HEADERS, cross_site, negotiate, parse_id};
use crate::auth::{Credential, Identity};
use crate::domain::{Author, FieldError, ReaderId, RoomName};
use crate::error::AppError;
use crate::feed::stall::StreamStall;
use crate::feed::{Feed, FeedRequest, Refused, StallWatch};
use crate::sign_in::guest_may_use;
use crate::state::AppState;
use crate::wire::Format;

/// Headers of every stream response besides its content type: no caching, no
/// transforming, and no buffering by nginx.
const STREAM_HEADERS: [(&str, &str); 2] =
    [("cache-control", "no-cache, no-transform"), ("x-accel-buffering", "no")];

/// The one set of headers every stream response carries, on either path (`date` and the
/// framing aside): content type, the stream headers and the security headers.
pub fn stream_headers(format: Format) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    for (name, value) in STREAM_HEADERS.iter().chain(&SECURITY_HEADERS) {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    headers
}

pub async fn events(
    State(state): State<AppState>,
    Peer(peer): Peer,
    identity: Identity,
    request: Parts,
) -> Result<Response, AppError> {
    let found = &request.extensions;
    // The connection already tried this request on the fast path, and it was refused there.
    if let Some(Refused(e)) = found.get::<Refused>() {
        return Err(e.clone());
    }
    let credential = found.get::<Credential>().cloned();
    let asked = feed_request(&state, peer, &request.uri, &request.headers, &identity, credential).await?;
    let feed = Feed::open(&state, asked).await?;
    Ok(stream_response(feed, found))
}

/// A stream as hyper serves it (every stream but those on the plaintext fast path): the
/// head of [`stream_headers`], the feed as the body; with a per-stream stall cut-off when
/// the request carries one (over TLS), and the connection's when it carries that.
pub fn stream_response(mut feed: Feed, found: &Extensions) -> Response {
    if let Some(StallWatch(flag)) = found.get::<StallWatch>() {
        feed.watch_stall(flag.clone());
    }
    let format = feed.format();
    let body = match found.get::<StreamStall>() {
        Some(stall) => crate::feed::stall::body(feed, *stall),
        None => Body::from_stream(feed.into_stream()),
    };
    let mut response = body.into_response();
    *response.headers_mut() = stream_headers(format);
    response
}

/// What a stream request asks for: room, resume point, format, and who reads.
///
/// A reader is named in presence only when a page of this site (or no browser) opened the
/// stream: any site can point an `EventSource` here, but what it names its visitors counts
/// as anonymous. A signed-in reader is named by their user name; a guest may not take a
/// registered one (`403`). A request for a host this server does not answer for is refused here too,
/// so the fast path leaves it to the router, which answers it (`421`).
pub async fn feed_request(
    state: &AppState,
    peer: std::net::SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    identity: &Identity,
    credential: Option<Credential>,
) -> Result<FeedRequest, AppError> {
    state.host_allowed(peer, headers)?;
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
    let reader = match (identity.user(), params.get("name").map(str::trim)) {
        (Some(user), _) => Some(user.clone()),
        (None, None | Some("")) => None,
        (None, Some(name)) => {
            let name = Author::parse(name).map_err(|e| FieldError::new("name", e.problem))?;
            guest_may_use(state, &name).await?;
            Some(name)
        }
    };
    let reader = reader.filter(|_| cross_site(state, peer, headers).is_none());
    let reader_id = params.get("reader").filter(|id| !id.is_empty()).map(ReaderId::parse).transpose()?;
    let presence = matches!(params.get("presence"), Some("1" | "true" | "yes"));
    let client = state.client_of(peer, headers);
    Ok(FeedRequest {
        room,
        resume_from,
        format,
        reader,
        reader_id,
        presence,
        client,
        identity: identity.clone(),
        credential,
    })
}
