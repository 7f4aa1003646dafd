//! The skill routes (owned by the skill work; see docs/architecture.md).

use axum::Router;
use utoipa::OpenApi;

use crate::AppState;

/// The skill routes, merged into the authenticated /v1 API.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// The skill routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi()]
#[derive(Debug)]
pub struct SkillApiDoc;
