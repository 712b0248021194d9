//! `GET /rooms/{room}/presence` (who is in the room) and `POST /typing` (someone is typing).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};

use super::send::decode;
use super::{Peer, same_origin};
use crate::domain::PresenceView;
use crate::domain::{Author, RoomName};
use crate::error::AppError;
use crate::metrics::Limited;
use crate::state::AppState;

pub async fn presence(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> Result<Json<PresenceView>, AppError> {
    let room = RoomName::parse(&room)?;
    let local = state.presence.local(&room);
    Ok(Json(state.store.presence(&room, local).await?))
}

/// A form or JSON body with `room` and `author`. `204` when sent on; `429` with
/// `Retry-After` when the same author typed in the same room under a second ago.
pub async fn typing(
    State(state): State<AppState>,
    Peer(peer): Peer,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, AppError> {
    same_origin(&state, peer, &headers)?;
    let fields = decode(&uri, &headers, body).await?;
    let room = RoomName::parse(fields.room.as_deref().unwrap_or(RoomName::DEFAULT))?;
    let author = Author::parse(fields.author.as_deref().unwrap_or(""))?;
    state.typing.check(&room, &author).inspect_err(|_| state.metrics.limited(Limited::Typing))?;
    state.store.typing(&room, &author).await?;
    Ok(StatusCode::NO_CONTENT)
}
