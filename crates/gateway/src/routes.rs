//! The router: upgrades first, then the service routes, the REST API (a
//! nested router under `/api`) and the editor page.
//!
//! A WebSocket upgrade on any path goes to the `upgrade` module (so a document
//! may be named `healthz` or `api/x`); every other request is routed by
//! path. Bodies are bounded by the length they declare before anything
//! reads them ([`RequestBodyLimitLayer`]); only `POST
//! /api/documents/{name}/updates` takes more than [`MAX_REQUEST_BODY_BYTES`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::error;

use crate::config::MAX_REQUEST_BODY_BYTES;
use crate::error::{ApiError, draining, method_not_allowed};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::upgrade::{is_websocket_upgrade, upgrade};
use crate::{api, editor};

/// Builds the node's router.
pub fn router(state: AppState) -> Router {
    let upgrades = Router::new()
        .fallback(|State(state): State<AppState>, request: Request| upgrade(state, request))
        .layer(body_limit())
        .with_state(state.clone());
    Router::new()
        .route("/healthz", service_route(get(healthz)))
        .route("/readyz", service_route(get(readyz)))
        .route("/metrics", service_route(get(metrics)))
        .fallback(page_or_not_found)
        .layer(body_limit())
        .nest("/api", api::router(&state.config))
        .layer(middleware::from_fn_with_state(upgrades, upgrades_first))
        .layer(middleware::map_response(payload_too_large_as_json))
        .with_state(state)
}

/// A router that answers only `GET /metrics` (`--metrics-listen`); any
/// other path is a JSON 404.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    let scrape = get(|State(metrics): State<Arc<Metrics>>| async move { encode_metrics(&metrics) })
        .fallback(|| async { method_not_allowed("GET, HEAD", "/metrics answers GET and HEAD") });
    Router::new()
        .route("/metrics", scrape)
        .fallback(|request: Request| async move {
            ApiError::not_found(format!(
                "no route {}; this listener serves /metrics only",
                request.uri().path()
            ))
        })
        .with_state(metrics)
}

/// Sends WebSocket upgrades to `upgrades`, everything else on.
async fn upgrades_first(State(upgrades): State<Router>, request: Request, next: Next) -> Response {
    if is_websocket_upgrade(&request) {
        return match upgrades.oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
    }
    next.run(request).await
}

/// The bound of every request body but an update's: no other route takes a
/// body (documents are edited over WebSocket).
fn body_limit() -> RequestBodyLimitLayer {
    RequestBodyLimitLayer::new(MAX_REQUEST_BODY_BYTES)
}

/// The JSON refusal for a body over its route's bound, in place of the
/// limit layer's plain-text 413 (an API route answers its own first).
async fn payload_too_large_as_json(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return response;
    }
    ApiError::payload_too_large(format!(
        "a request body may be at most {MAX_REQUEST_BODY_BYTES} bytes; documents are edited over WebSocket"
    ))
    .into_response()
}

/// A service route: GET and HEAD, any other method a JSON 405.
fn service_route(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.fallback(|| async {
        method_not_allowed("GET, HEAD", "service routes answer GET and HEAD")
    })
}

/// The editor page (`/`, `/index.html`, `/assets/...`), or a JSON 404.
async fn page_or_not_found(request: Request<Body>) -> Response {
    let path = request.uri().path();
    let method = request.method();
    let readable = method == Method::GET || method == Method::HEAD;
    if editor::is_page_route(path) && !readable {
        return method_not_allowed("GET, HEAD", "the editor page answers GET and HEAD");
    }
    let page = if readable {
        editor::serve(path, request.headers())
    } else {
        None
    };
    page.unwrap_or_else(|| {
        ApiError::not_found(format!(
            "no route {path}; documents are reached with a WebSocket upgrade"
        ))
        .into_response()
    })
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.lifecycle.is_draining() {
        return draining().into_response();
    }
    if let Err(reason) = state.auth.check_ready() {
        return ApiError::unavailable("not ready", reason).into_response();
    }
    if let Err(reason) = state.registry.check_ready().await {
        return ApiError::unavailable("not ready", reason).into_response();
    }
    if !state.revocations.is_loaded() {
        return ApiError::unavailable("not ready", "the revocations are still being read")
            .into_response();
    }
    axum::Json(serde_json::json!({ "status": "ready" })).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    encode_metrics(&state.metrics)
}

fn encode_metrics(metrics: &Metrics) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            error!(error = %error, "encode metrics");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "metrics could not be encoded",
            )
            .into_response()
        }
    }
}
