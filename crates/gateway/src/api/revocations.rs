//! `POST /api/revocations` and `GET /api/revocations` (admin).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{error, info};

use super::extract::{Peer, caller};
use crate::error::ApiError;
use crate::live::{MAX_LIVE_REVOCATIONS, RevocationRequest, RevokeError, unix_now};
use crate::state::AppState;

async fn require_admin(state: &AppState, headers: &HeaderMap, peer: Peer) -> Result<(), ApiError> {
    if caller(state, headers, None, peer).await?.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "revocations take a token with admin: true",
    ))
}

/// Makes a revocation: durable in the log before the `201`, applied on
/// every node within a second.
pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, peer).await?;
    let request: RevocationRequest = serde_json::from_slice(&body).map_err(|failure| {
        ApiError::bad_request(format!(
            "the body must be {{\"sub\"}}, {{\"jti\"}} or {{\"sub\",\"docs\",\"access\"}}: {failure}"
        ))
    })?;
    match state.revocations.revoke(request).await {
        Ok(record) => {
            info!(id = %record.id, sub = ?record.sub, jti = ?record.jti, docs = ?record.docs, "revocation made");
            Ok((StatusCode::CREATED, Json(record)).into_response())
        }
        Err(RevokeError::Invalid(reason)) => Err(ApiError::bad_request(reason)),
        Err(RevokeError::Full) => Err(ApiError::too_many_requests(
            format!("{MAX_LIVE_REVOCATIONS} revocations are live; retry once some end"),
            60,
        )),
        Err(RevokeError::Disabled) => Err(ApiError::unavailable(
            "unavailable",
            "revocations are not enabled on this node",
        )),
        Err(failure @ RevokeError::Log(_)) => {
            error!(error = %failure, error.source = ?std::error::Error::source(&failure), "store revocation failed");
            Err(ApiError::unavailable(
                "unavailable",
                "the revocation could not be stored; retry",
            ))
        }
    }
}

/// The live revocations, oldest first.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, peer).await?;
    let revocations = state.revocations.current().live(unix_now());
    Ok(Json(serde_json::json!({ "revocations": revocations })).into_response())
}
