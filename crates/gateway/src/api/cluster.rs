//! `GET /api/cluster` (admin): the nodes of a cluster of owners and the
//! updates topic's partitions each owns.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::{Peer, caller};
use crate::error::ApiError;
use crate::state::AppState;

/// `{"generation":N,"nodes":[{"id","address","partitions":[...]}]}`; 404
/// on a node not in `--cluster-mode ownership`.
pub(super) async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
) -> Result<Response, ApiError> {
    if !caller(&state, &headers, None, peer).await?.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the cluster takes a token with admin: true",
        ));
    }
    let Some(ownership) = &state.ownership else {
        return Err(ApiError::not_found(
            "this node does not share partitions by ownership (--cluster-mode ownership)",
        ));
    };
    Ok(Json(ownership.view()).into_response())
}
