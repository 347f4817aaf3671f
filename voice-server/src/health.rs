//! Liveness and readiness probes.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voice_core::wire::Health;

use crate::error::{ApiResult, Json};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database answers; 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = voice_core::wire::ErrorBody)))]
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
