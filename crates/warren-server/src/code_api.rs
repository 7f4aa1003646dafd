//! The code routes (owned by the code work; see docs/architecture.md).

use axum::Router;
use utoipa::OpenApi;

use crate::AppState;

/// The code routes, merged into the authenticated /v1 API.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// The code routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi()]
#[derive(Debug)]
pub struct CodeApiDoc;
