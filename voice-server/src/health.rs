//! Liveness and readiness probes.

use axum::Router;
use axum::routing::get;
use voice_core::wire::Health;

use crate::error::{ApiResult, Json};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up and serving.
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database answers; 503 otherwise.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<Health>> {
    state
        .store
        .ping()
        .await
        .map_err(|_| voice_core::Error::unavailable("the database is not reachable"))?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}
