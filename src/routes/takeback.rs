//! Taking messages back: `DELETE /rooms/{room}/messages/{id}` and
//! `PATCH /rooms/{room}/messages/{id}` with `{"text": ...}`, for scripts and the page's
//! script; and for the page without JavaScript, `POST .../delete`, `GET .../edit` (a form)
//! and `POST .../edit` (its post), each answering `303` back to the room.
//!
//! Every route goes the same way: same site and within the send rate (`admit_send`), the
//! path and the new text validated, the room readable, the message held and not deleted
//! (else `404`), the change allowed ([`may_change`]: `401` for guests, `403` for others,
//! `409` for an edit past `--edit-window`), then the store logs it as an entry of its own,
//! which every open stream receives.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::index::{error_page, render, root_for};
use super::send::{BodyKind, admit_send, decode_form, decode_json, read_body};
use super::{Peer, Viewer, parse_id};
use crate::domain::{Change, Entry, Message, MessageId, MessageText, RoomName, TakeBack, Timestamp};
use crate::error::AppError;
use crate::policy::watch::Need;
use crate::state::AppState;
use crate::takeback::may_change;
use crate::wire::{Event, Format, Frame};

/// The message a route is about, validated.
struct Target {
    room: RoomName,
    id: MessageId,
}

impl Target {
    fn parse((room, id): &(String, String)) -> Result<Self, AppError> {
        Ok(Self { room: RoomName::parse(room)?, id: parse_id("id", id)? })
    }

    fn not_found(&self) -> AppError {
        AppError::NotFound(format!(
            "there is no message #{} in #{} (it may have been deleted)",
            self.id, self.room
        ))
    }

    fn change(&self, change: Change) -> TakeBack {
        TakeBack { room: self.room.clone(), target: self.id, change }
    }
}

/// `DELETE /rooms/{room}/messages/{id}`: `200` with the delete entry,
/// `{"entry":46,"event":"delete","id":42}`.
pub async fn delete(
    State(state): State<AppState>,
    Peer(peer): Peer,
    viewer: Viewer,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    admit_send(&state, peer, &headers).await?;
    let target = Target::parse(&path)?;
    let entry = take_back(&state, &viewer, &target, Change::Delete).await?;
    Ok(entry_json(entry))
}

/// `PATCH /rooms/{room}/messages/{id}` with `{"text": "..."}` (or a form): `200` with the
/// message as it now reads, `edited` set, and the edit entry's own id as `entry`.
pub async fn edit(
    State(state): State<AppState>,
    Peer(peer): Peer,
    viewer: Viewer,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    admit_send(&state, peer, &headers).await?;
    let target = Target::parse(&path)?;
    let text = new_text(&headers, body).await?;
    let entry = take_back(&state, &viewer, &target, Change::Edit(text)).await?;
    Ok(entry_json(entry))
}

/// `POST /rooms/{room}/messages/{id}/delete`: the page's delete button.
pub async fn delete_form(
    State(state): State<AppState>,
    Peer(peer): Peer,
    viewer: Viewer,
    Path(path): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let root = root_for(uri.path());
    let done = async {
        admit_send(&state, peer, &headers).await?;
        let target = Target::parse(&path)?;
        take_back(&state, &viewer, &target, Change::Delete).await?;
        Ok::<_, AppError>(back_to(&root, &target.room))
    };
    done.await.unwrap_or_else(|e| page_for(&e, &root))
}

/// `GET /rooms/{room}/messages/{id}/edit`: the edit form, for the page without JavaScript.
pub async fn edit_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(path): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let root = root_for(uri.path());
    let shown = async {
        let target = Target::parse(&path)?;
        let message = allowed(&state, &viewer, &target, &Change::Edit(placeholder())).await?;
        Ok::<_, AppError>(edit_form(&root, &target, message.text.as_str(), None, StatusCode::OK))
    };
    shown.await.unwrap_or_else(|e| page_for(&e, &root))
}

/// `POST /rooms/{room}/messages/{id}/edit`: the edit form's post. A refused text comes back
/// in the form with the reason.
pub async fn edit_form_post(
    State(state): State<AppState>,
    Peer(peer): Peer,
    viewer: Viewer,
    Path(path): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let root = root_for(uri.path());
    let target = match Target::parse(&path) {
        Ok(target) => target,
        Err(e) => return page_for(&e, &root),
    };
    let mut typed = String::new();
    let done = async {
        admit_send(&state, peer, &headers).await?;
        let (kind, bytes) = read_body(&headers, body).await?;
        typed = raw_text(kind, &bytes)?;
        let text = MessageText::parse(&typed)?;
        take_back(&state, &viewer, &target, Change::Edit(text)).await?;
        Ok::<_, AppError>(back_to(&root, &target.room))
    };
    match done.await {
        Ok(response) => response,
        Err(e @ (AppError::Invalid(_) | AppError::Conflict(_))) => {
            edit_form(&root, &target, &typed, Some(&e.public_message()), e.status())
        }
        Err(e) => page_for(&e, &root),
    }
}

/// Checks `change` as [`allowed`] does, then has the store log it.
async fn take_back(
    state: &AppState,
    viewer: &Viewer,
    target: &Target,
    change: Change,
) -> Result<Entry, AppError> {
    allowed(state, viewer, target, &change).await?;
    // Deleted meanwhile by someone else: the store checks again, atomically.
    state.store.take_back(target.change(change)).await?.ok_or_else(|| target.not_found())
}

/// The message as it reads now, if the viewer may read the room (the rules and bans, as for
/// every request: a room it may not read hides even whether the message exists), the
/// message is there, and the viewer may make `change` to it.
async fn allowed(
    state: &AppState,
    viewer: &Viewer,
    target: &Target,
    change: &Change,
) -> Result<Message, AppError> {
    let access = viewer.admit(state, &target.room, Need::Read).await?;
    let message = state.store.message(&target.room, target.id).await?.ok_or_else(|| target.not_found())?;
    let now = Timestamp::now();
    may_change(&viewer.who, access, &message, change, now, state.config.edit_window)
        .map_err(|why| why.into_error(change))?;
    Ok(message)
}

/// The `text` of a PATCH or edit form body, validated.
async fn new_text(headers: &HeaderMap, body: Body) -> Result<MessageText, AppError> {
    let (kind, bytes) = read_body(headers, body).await?;
    Ok(MessageText::parse(&raw_text(kind, &bytes)?)?)
}

/// The `text` field of a body, before validation ("" when missing: "must not be empty").
fn raw_text(kind: BodyKind, bytes: &[u8]) -> Result<String, AppError> {
    let fields = match kind {
        BodyKind::Json => decode_json(bytes, "text")?,
        BodyKind::Form => decode_form(bytes)?,
    };
    Ok(fields.text.unwrap_or_default())
}

/// Any text: the decision on an edit does not depend on it.
fn placeholder() -> MessageText {
    MessageText::parse("-").expect("a valid text")
}

/// The entry as JSON, the same object an NDJSON stream carries for it.
fn entry_json(entry: Entry) -> Response {
    let line = Frame::new(Event::of(entry)).encoded(Format::Ndjson);
    ([(header::CONTENT_TYPE, "application/json")], line).into_response()
}

/// `303` back to the room's page.
fn back_to(root: &str, room: &RoomName) -> Response {
    let location = if *room == RoomName::general() { root.to_owned() } else { format!("{root}rooms/{room}") };
    let location = HeaderValue::from_str(&location).expect("room names are URL-safe");
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

fn page_for(error: &AppError, root: &str) -> Response {
    let mut page = error_page(error.status(), &error.public_message(), root);
    error.add_headers(&mut page);
    page
}

#[derive(askama::Template)]
#[template(path = "edit.html")]
struct EditPage<'a> {
    root: &'a str,
    room: &'a str,
    id: MessageId,
    text: &'a str,
    error: Option<&'a str>,
}

fn edit_form(root: &str, target: &Target, text: &str, error: Option<&str>, status: StatusCode) -> Response {
    let page = EditPage { root, room: target.room.as_str(), id: target.id, text, error };
    render(status, &page)
}
