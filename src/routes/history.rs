//! `GET /history?room=R&since=ID&limit=N`: a JSON array of messages, oldest first, as they
//! read now: deleted ones left out, edited ones with their new text and `edited` time.
//!
//! With `since`, the first `limit` entries of the log after that id; without it, the newest
//! `limit`. Deletes and edits are entries too, so fewer than `limit` messages may come.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;

use super::{Params, Viewer};
use crate::domain::{Message, RoomName};
use crate::error::AppError;
use crate::policy::watch::Need;
use crate::state::AppState;
use crate::store::Range;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

pub async fn history(
    State(state): State<AppState>,
    viewer: Viewer,
    uri: Uri,
) -> Result<Json<Vec<Message>>, AppError> {
    let params = Params::from_uri(&uri)?;
    let room = RoomName::parse(params.get("room").unwrap_or(RoomName::DEFAULT))?;
    viewer.admit(&state, &room, Need::Read).await?;
    let range = params.id("since")?.map_or(Range::Latest, Range::After);
    let limit = params.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = state.store.read(&room, range, limit).await?;
    Ok(Json(page.current()))
}
