//! `GET /rooms/{room}/presence` (who is in the room) and `POST /typing` (someone is typing).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};

use super::send::decode;
use super::{Peer, Viewer, same_origin};
use crate::domain::PresenceView;
use crate::domain::RoomName;
use crate::error::AppError;
use crate::metrics::Limited;
use crate::policy::watch::Need;
use crate::sign_in::author_for;
use crate::state::AppState;

/// The room's presence as its streams are told it: at most `--presence-names` names.
pub async fn presence(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(room): Path<String>,
) -> Result<Json<PresenceView>, AppError> {
    let room = RoomName::parse(&room)?;
    viewer.admit(&state, &room, Need::Read).await?;
    Ok(Json(state.presence.view(&room).await?))
}

/// A form or JSON body with `room` and `author`. `204` when sent on; `429` with
/// `Retry-After` when the client is over its typing bucket (checked before the body is
/// read) or the same author typed in the same room under a second ago.
pub async fn typing(
    State(state): State<AppState>,
    Peer(peer): Peer,
    viewer: Viewer,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, AppError> {
    same_origin(&state, peer, &headers)?;
    let counted = |_: &AppError| state.metrics.limited(Limited::Typing);
    state.typing.admit(viewer.client).inspect_err(counted)?;
    let fields = decode(&uri, &headers, body).await?;
    let room = RoomName::parse(fields.room.as_deref().unwrap_or(RoomName::DEFAULT))?;
    viewer.admit(&state, &room, Need::Write).await?;
    let author = author_for(&state, &viewer.who, fields.author.as_deref()).await?;
    state.typing.check(&room, &author).inspect_err(counted)?;
    state.store.typing(&room, &author).await?;
    Ok(StatusCode::NO_CONTENT)
}
