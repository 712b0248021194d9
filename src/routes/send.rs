//! `POST /send`: a form or JSON body with `room`, `author` and `text`.
//!
//! Decode, validate, store (which publishes), respond: `201` with the message as JSON, or,
//! for a browser's form post, `303` back to the room page. A browser whose post was refused
//! gets the room page again with the reason shown and what it typed kept.
//!
//! Never ambiguous: every send carries an idempotency key (the client's, or one made here),
//! and a store that does not confirm a write is asked again under that key until
//! `--send-timeout` ([`submit_settled`]). A `503` says "nothing was saved" only when that is
//! certain; otherwise it says the outcome is unknown and gives the key to retry with.

use std::net::SocketAddr;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::index::{Draft, refusal_page, room_page, root_for};
use super::{Params, Peer, Viewer, prefers_html, same_origin, unescape_form};
use crate::domain::{FieldError, IdempotencyKey, NewMessage, RoomName};
use crate::error::AppError;
use crate::metrics::Limited;
use crate::policy::watch::Need;
use crate::sign_in::guest_may_use;
use crate::state::AppState;
use crate::store::{Appended, submit_settled};

/// What a browser is told when its post's outcome is unknown: the form it gets back names
/// the same message, so sending it again is the retry that finds out.
pub const UNSETTLED_FORM: &str =
    "the message may or may not have been saved; send it again to find out (it will not be stored twice)";

/// The largest body `/send` reads; a message is at most 4,000 characters.
pub const MAX_BODY: usize = 64 * 1024;

/// The raw fields, before validation.
#[derive(Debug, Default)]
pub struct SendFields {
    pub room: Option<String>,
    pub author: Option<String>,
    pub text: Option<String>,
    /// The body's name for this message, as `Idempotency-Key` would give it.
    pub client_id: Option<String>,
}

pub async fn send(
    State(state): State<AppState>,
    Peer(peer): Peer,
    viewer: Viewer,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let browser = prefers_html(&headers);
    let early = |error| Refusal::early(browser, &uri, error);
    if let Err(refused) = admit_send(&state, peer, &headers).await.map_err(AppError::unsaved) {
        return match replay_over_limit(&state, &uri, &headers, body, &refused).await {
            Some(original) => Ok(accepted(original, browser)),
            None => Err(early(refused)),
        };
    }
    let fields = decode(&uri, &headers, body).await.map_err(early)?;
    match store(&state, &viewer, &headers, &fields).await.map_err(AppError::unsaved) {
        Ok(appended) => Ok(accepted(appended, browser)),
        Err(error) => Err(Refusal::late(&state, &viewer, browser, &uri, &fields, error).await),
    }
}

/// A retry is not a new send: a client over its send rate that names a stored message by its
/// `Idempotency-Key` header gets that message back (`200`, replayed), and nothing is stored.
/// Only the header counts: the body is read (to learn the room) only for a request that has
/// one, so a client over its rate without it is still refused on its headers alone, and a
/// `client_id` in the body is honoured only within the rate.
async fn replay_over_limit(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    refused: &AppError,
) -> Option<Appended> {
    if !matches!(refused, AppError::RateLimited { .. }) {
        return None;
    }
    let key = header_key(headers).ok()??;
    let fields = decode(uri, headers, body).await.ok()?;
    let room = RoomName::parse(fields.room.as_deref().unwrap_or(RoomName::DEFAULT)).ok()?;
    let message = state.store.find(&room, &key).await.ok()??;
    Some(Appended { message, replayed: true })
}

/// Validates the fields and stores the message (or finds the one its key names), under the
/// client's key or, without one, a key made up here, so that an unconfirmed write can be
/// settled (and, if it can't be in time, retried by the client under that key).
///
/// The sender must be allowed to post in the room (access rules, bans), and in slow mode
/// it takes its turn first.
async fn store(
    state: &AppState,
    viewer: &Viewer,
    headers: &HeaderMap,
    fields: &SendFields,
) -> Result<Appended, AppError> {
    let room = fields.room.as_deref().unwrap_or(RoomName::DEFAULT);
    let identity = &viewer.who;
    let author = identity.user().map_or(fields.author.as_deref(), |name| Some(name.as_str()));
    let mut new = NewMessage::parse(room, author, fields.text.as_deref())?;
    let access = viewer.admit(state, &new.room, Need::Write).await?;
    match identity.user() {
        Some(name) => new = new.signed_by(name),
        None => guest_may_use(state, &new.author).await?,
    }
    let key = idempotency_key(headers, fields)?.unwrap_or_else(IdempotencyKey::random);
    if let Err(slow) = state.take_turn(&viewer.who, viewer.client, &new.room, access).await {
        // A retry of a message already stored is not a new send: it gets the original.
        let stored = state.store.find(&new.room, &key).await.ok().flatten();
        return stored.map(|message| Appended { message, replayed: true }).ok_or(slow);
    }
    let appended = submit_settled(&*state.store, new.with_key(Some(key.clone())), state.config.send_timeout)
        .await
        .map_err(|cause| AppError::sending(cause, key))?;
    if !appended.replayed {
        state.metrics.stored();
    }
    Ok(appended)
}

/// `201` with the message; `200` for a replayed key; a browser goes back to the room (`303`),
/// at its message (`#mID`): the list scrolls there, also without JavaScript.
fn accepted(Appended { message, replayed }: Appended, browser: bool) -> Response {
    if browser {
        let room = if message.room == RoomName::general() {
            "./".to_owned()
        } else {
            format!("rooms/{}", message.room)
        };
        let location = format!("{room}#m{}", message.id);
        let location = HeaderValue::from_str(&location).expect("room names are URL-safe");
        return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    }
    if replayed {
        // A retry of a message already stored: the original, and nothing new.
        (StatusCode::OK, [("idempotent-replayed", "true")], Json(message)).into_response()
    } else {
        (StatusCode::CREATED, Json(message)).into_response()
    }
}

/// A refused send, said the way its client reads it: JSON for scripts; for a browser the
/// error page (nothing to go back to) or, once the fields were read, the room page again
/// with the reason shown and what was typed kept.
pub enum Refusal {
    Json(AppError),
    ErrorPage {
        error: AppError,
        root: String,
        /// Where a sign-in should lead back to.
        next: String,
    },
    /// Already rendered: it takes reads from the store, which `into_response` can't await.
    RoomPage(Response),
}

impl Refusal {
    /// Refused before the fields could be read.
    fn early(browser: bool, uri: &Uri, error: AppError) -> Self {
        if browser {
            Self::ErrorPage { error, root: root_for(uri.path()), next: "/".to_owned() }
        } else {
            Self::Json(error)
        }
    }

    /// Refused once the fields were read: a browser gets its draft back on the room page,
    /// unless it may not read the room (the rules, a ban): then the error page, which shows
    /// nothing of the room.
    async fn late(
        state: &AppState,
        viewer: &Viewer,
        browser: bool,
        uri: &Uri,
        fields: &SendFields,
        error: AppError,
    ) -> Self {
        if !browser {
            return Self::Json(error);
        }
        let root = root_for(uri.path());
        let Ok(room) = RoomName::parse(fields.room.as_deref().unwrap_or(RoomName::DEFAULT)) else {
            return Self::ErrorPage { error, root, next: "/".to_owned() };
        };
        let refused = matches!(error, AppError::Unauthorized(_) | AppError::Forbidden(_));
        if refused && viewer.admit(state, &room, Need::Read).await.is_err() {
            let next = if room == RoomName::general() { "/".to_owned() } else { format!("/rooms/{room}") };
            return Self::ErrorPage { error, root, next };
        }
        // Sent again, the form names the same message: a retry of an unknown outcome settles
        // it, and after any other refusal nothing was stored under the key.
        let message = match error.unsettled_key() {
            Some(_) => UNSETTLED_FORM.to_owned(),
            None => error.public_message(),
        };
        let valid = |id: &&str| IdempotencyKey::parse("client_id", id).is_ok();
        let client_id = error.unsettled_key().map(IdempotencyKey::as_str);
        let draft = Draft {
            author: fields.author.as_deref().unwrap_or(""),
            user: viewer.who.user().map(|name| name.as_str()),
            text: fields.text.as_deref().unwrap_or(""),
            error: Some(&message),
            client_id: client_id.or(fields.client_id.as_deref().filter(valid)),
        };
        let mut page = room_page(state, viewer, &room, &root, error.status(), draft).await;
        error.add_headers(&mut page);
        Self::RoomPage(page)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Json(error) => error.into_response(),
            Self::ErrorPage { error, root, next } => refusal_page(&error, &root, &next),
            Self::RoomPage(page) => page,
        }
    }
}

/// The message's key: the `Idempotency-Key` header, or the body's `client_id`.
fn idempotency_key(headers: &HeaderMap, fields: &SendFields) -> Result<Option<IdempotencyKey>, FieldError> {
    match header_key(headers)? {
        Some(key) => Ok(Some(key)),
        None => fields.client_id.as_deref().map(|v| IdempotencyKey::parse("client_id", v)).transpose(),
    }
}

/// The `Idempotency-Key` header, if given.
fn header_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, FieldError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let v = v.to_str().map_err(|_| FieldError::new("Idempotency-Key", "must be visible ASCII"))?;
    Ok(Some(IdempotencyKey::parse("Idempotency-Key", v)?))
}

/// A write from this peer may go ahead: same site (no CSRF), and its client within its send
/// rate. Runs before the body is read, so a refused client costs no more than its headers.
pub async fn admit_send(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), AppError> {
    same_origin(state, peer, headers)?;
    state.sends.check(state.client_of(peer, headers)).await.inspect_err(|e| {
        if matches!(e, AppError::RateLimited { .. }) {
            state.metrics.limited(Limited::Send);
        }
    })
}

/// What a body is, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

/// Reads a form or JSON body of at most `MAX_BODY` bytes, refusing other content types
/// (`415`), larger bodies (`413`) and bodies that come too slowly (`408`).
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<(BodyKind, axum::body::Bytes), AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = content_type == "application/json" || content_type.ends_with("+json");
    if !is_json && content_type != "application/x-www-form-urlencoded" {
        let shown = if content_type.is_empty() { "none".to_owned() } else { content_type };
        return Err(AppError::UnsupportedMediaType(format!(
            "unsupported content type ({shown}); send application/x-www-form-urlencoded or application/json"
        )));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(AppError::TooLarge { limit: MAX_BODY });
    }
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            AppError::TooLarge { limit: MAX_BODY }
        } else if crate::body_deadline::timed_out(&e) {
            AppError::RequestTimeout(e.to_string())
        } else {
            AppError::Malformed(format!("could not read the request body: {e}"))
        }
    })?;
    Ok((if is_json { BodyKind::Json } else { BodyKind::Form }, bytes))
}

/// Reads the body by its content type and merges in `?room=`.
pub async fn decode(uri: &Uri, headers: &HeaderMap, body: Body) -> Result<SendFields, AppError> {
    let params = Params::from_uri(uri)?;
    let (kind, bytes) = read_body(headers, body).await?;
    let is_json = kind == BodyKind::Json;
    let mut fields: SendFields =
        if is_json { decode_json(&bytes, "room, author and text")? } else { decode_form(&bytes)? };
    match (fields.room.as_deref(), params.get("room")) {
        (Some(body_room), Some(query_room)) if body_room != query_room => {
            return Err(FieldError::new(
                "room",
                format!(
                    "given twice with different values ({query_room:?} in the URL, {body_room:?} in the body)"
                ),
            )
            .into());
        }
        (None, Some(query_room)) => fields.room = Some(query_room.to_owned()),
        _ => {}
    }
    Ok(fields)
}

/// A JSON object; other fields (for later versions) are ignored, but no key may be given
/// twice (serde_json would keep the last value without a word).
/// `expected` names the fields that matter, for the error.
pub fn decode_json(bytes: &[u8], expected: &str) -> Result<SendFields, AppError> {
    let UniqueKeys(object) = serde_json::from_slice::<UniqueKeys>(bytes).map_err(|e| {
        AppError::Malformed(format!("malformed JSON (expected an object with {expected}): {e}"))
    })?;
    let field = |name: &'static str| match object.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FieldError::new(name, "must be a string")),
    };
    Ok(SendFields {
        room: field("room")?,
        author: field("author")?,
        text: field("text")?,
        client_id: field("client_id")?,
    })
}

/// A JSON object whose keys are all different.
struct UniqueKeys(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<UniqueKeys, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((key, value)) = entries.next_entry::<String, serde_json::Value>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(given_twice(&key)));
            }
            object.insert(key, value);
        }
        Ok(UniqueKeys(object))
    }
}

/// The same words for a form and a JSON body.
fn given_twice(name: &str) -> String {
    format!("the field {name:?} is given more than once")
}

/// `application/x-www-form-urlencoded`, strictly: valid UTF-8, valid `%XX` escapes, each
/// field at most once. A value that won't decode is refused naming its field.
pub fn decode_form(bytes: &[u8]) -> Result<SendFields, AppError> {
    let malformed = |why: String| AppError::Malformed(format!("malformed form data: {why}"));
    let body = std::str::from_utf8(bytes).map_err(|_| malformed("the body is not valid UTF-8".into()))?;
    let mut fields = SendFields::default();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = unescape_form(name).map_err(|why| malformed(format!("a field name {why}")))?;
        let (field, slot) = match name.as_str() {
            "room" => ("room", &mut fields.room),
            "author" => ("author", &mut fields.author),
            "text" => ("text", &mut fields.text),
            "client_id" => ("client_id", &mut fields.client_id),
            _ => continue,
        };
        if slot.is_some() {
            return Err(malformed(given_twice(field)));
        }
        let value = unescape_form(value)
            .map_err(|why| FieldError::new(field, format!("malformed form data: {why}")))?;
        *slot = Some(value);
    }
    Ok(fields)
}
