//! `GET /rooms?limit=N`: active rooms as JSON, most recently active first.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;

use super::{Params, Viewer};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::RoomInfo;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Rooms the asker may not read are left out.
pub async fn rooms(
    State(state): State<AppState>,
    Viewer { who, client }: Viewer,
    uri: Uri,
) -> Result<Json<Vec<RoomInfo>>, AppError> {
    let params = Params::from_uri(&uri)?;
    let limit = params.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let rooms = state.store.rooms(limit).await?;
    Ok(Json(state.readable(&who, client, rooms).await?))
}
