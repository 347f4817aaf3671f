//! The OpenAPI document of the whole HTTP API, generated from the
//! handlers' own annotations as the router is built, and served at
//! `GET /v1/openapi.json`. A route can only be added through the same
//! annotated registration, so the document cannot leave one out.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The parts of the document that belong to no handler.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "voice",
        description = "Private messaging and voice calls. Errors are `{\"error\":{\"code\",\"message\"}}`; WebSocket events are described in docs/PROTOCOL.md."
    ),
    modifiers(&BearerAuth),
    components(schemas(voice_core::wire::ErrorBody))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document, serialized once at start.
#[derive(Clone)]
pub struct OpenApiJson(pub Arc<String>);

#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.as_str().to_owned(),
    )
}
