//! The skill routes: sandboxes built from skill files (`warren-skill`) and their tools.
//!
//! * `POST /v1/skills` builds a sandbox from a skill file's text and its package files (base64),
//!   or, for an admin, from a skill file on the server host. The build runs in a task of its
//!   own: a caller that goes away does not leave a half-built sandbox (it finishes, or fails
//!   and is removed).
//! * `GET /v1/skills`, `GET /v1/skills/{id}`, `DELETE /v1/skills/{id}` (cleanup),
//!   `POST /v1/skills/{id}/tools/{tool}`.
//!
//! A sandbox belongs to the caller who built it: anyone else gets 403 unless they are an admin.
//! A tool the skill does not allow is 403 `tool_not_allowed`. A call that ran is 200 whatever
//! its outcome (`ok`, `exit_code`, `error` in the body).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use warren_skill::tools::{ListFilesArgs, ReadFileArgs, RunCommandArgs, RunPythonArgs, WriteFileArgs};
use warren_skill::{
    BuildLog, BuildRequest, BuildStatus, BuildStep, Cleanup, Encoding, FileInfo, InstalledPackage, PackageSource,
    Runtime, Sandbox, SandboxId, SandboxLimits, SandboxRecord, SandboxStats, SkillError, Skills, ToolError, ToolName,
    ToolResult,
};

use crate::api::Backend;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::RawBody;
use crate::{AppState, Caller};

/// The skill routes, merged into the authenticated /v1 API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/skills", post(build_skill).get(list_skills))
        .route("/v1/skills/{id}", get(get_skill).delete(cleanup_skill))
        .route("/v1/skills/{id}/tools/{tool}", post(call_tool))
}

/// The skill routes' part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(build_skill, list_skills, get_skill, cleanup_skill, call_tool),
    components(schemas(
        BuildSkill, Sandbox, SandboxLimits, SandboxStats, BuildLog, BuildStep, BuildStatus, InstalledPackage, Runtime,
        ToolName, Cleanup, ToolResult, ToolError, FileInfo, Encoding, WriteFileArgs, ReadFileArgs, ListFilesArgs,
        RunCommandArgs, RunPythonArgs,
    )),
    tags((name = "skills", description = "Sandboxes built from skill files (docs/skills.md), and their tools"))
)]
#[derive(Debug)]
pub struct SkillApiDoc;

/// `POST /v1/skills`: exactly one of `skill` and `path`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSkill {
    /// The skill file: Markdown with a YAML front matter (docs/skills.md).
    pub skill: Option<String>,
    /// The package files the skill lists (wheels, `.tgz` tarballs), standard base64, under the
    /// path the skill lists them by (like `wheels/demo-0.1.0-py3-none-any.whl`).
    #[serde(default)]
    pub package_files: BTreeMap<String, String>,
    /// Admin only: an absolute path of a skill file on the server host; its package files are
    /// read from beside it.
    pub path: Option<String>,
    /// Admin only: the backend (default: the server's).
    pub backend: Option<Backend>,
}

/// The one mapping of skill errors to HTTP.
pub fn skill_error(e: SkillError) -> ApiError {
    if let SkillError::Engine(inner) = e {
        return ApiError::from(inner);
    }
    let status = match &e {
        SkillError::Invalid { .. } | SkillError::InvalidArgs { .. } => StatusCode::BAD_REQUEST,
        SkillError::ToolNotAllowed { .. } => StatusCode::FORBIDDEN,
        SkillError::UnknownTool(_) | SkillError::NotFound(_) => StatusCode::NOT_FOUND,
        SkillError::Build { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        SkillError::TooMany(_) => StatusCode::CONFLICT,
        SkillError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { bytes };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON for this route: {e}")))
}

/// The record of `raw` if the caller may act on it: its owner or an admin (403 otherwise).
async fn authorize(s: &AppState, c: &Caller, raw: &str) -> ApiResult<(SandboxId, SandboxRecord)> {
    let id = SandboxId::new(raw).map_err(skill_error)?;
    let rec = Skills::new(&s.engine).get(&id).await.map_err(skill_error)?;
    if !c.principal.admin && rec.owner.as_ref() != Some(&c.principal.user) {
        return Err(ApiError::forbidden(format!(
            "skill sandbox {id} is not one of yours (user {}); operator access needs the admin claim",
            c.principal.user
        )));
    }
    Ok((id, rec))
}

/// Builds a sandbox from a skill (201). The build runs to its end even if the caller goes away;
/// a failed build leaves nothing behind (422 `build_failed` with the failed step's output).
#[utoipa::path(post, path = "/v1/skills", tag = "skills", security(("bearer" = [])),
    request_body = BuildSkill,
    responses(
        (status = 201, body = Sandbox),
        (status = 400, description = "the skill file or a package file is not valid (`invalid_skill`)", body = ErrorBody),
        (status = 403, description = "`path` or `backend` without the admin claim", body = ErrorBody),
        (status = 409, description = "the caller has the most sandboxes allowed (`too_many_sandboxes`)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "the build failed (`build_failed`); nothing was left", body = ErrorBody),
    ))]
pub async fn build_skill(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    let b: BuildSkill = parse_json(&body)?;
    drop(body);
    if (b.path.is_some() || b.backend.is_some()) && !c.principal.admin {
        return Err(ApiError::forbidden(
            "building from a path on the server host, or on a chosen backend, needs the admin claim",
        ));
    }
    let (text, packages, origin) = match (b.skill, b.path) {
        (Some(text), None) => {
            let mut files = BTreeMap::new();
            for (path, data) in b.package_files {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|e| ApiError::bad_request(format!("package_files[{path:?}] is not base64: {e}")))?;
                files.insert(path, bytes);
            }
            (text, PackageSource::Given(files), "api".to_owned())
        }
        (None, Some(path)) => {
            if !b.package_files.is_empty() {
                return Err(ApiError::bad_request("package_files go with skill, not with path (read beside the file)"));
            }
            let file = PathBuf::from(&path);
            if !file.is_absolute() {
                return Err(ApiError::bad_request(format!("path {path:?} must be absolute")));
            }
            let text = read_skill_file(&file).await?;
            let dir = file.parent().map(FsPath::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
            (text, PackageSource::Dir(dir), path)
        }
        _ => return Err(ApiError::bad_request("give exactly one of skill (the file's text) and path (admins)")),
    };
    let req = BuildRequest {
        text,
        packages,
        owner: Some(c.principal.user.clone()),
        backend: b.backend.map(Into::into),
        origin,
        max_limits: (!c.principal.admin).then(|| s.engine.config().limits.clone()),
    };
    let state = s.clone();
    let task = tokio::spawn(async move {
        let skills = Skills::new(&state.engine);
        let rec = skills.build(req).await?;
        Ok::<_, SkillError>(skills.view(rec, false).await)
    });
    let view = task
        .await
        .map_err(|e| ApiError::from(warren_core::Error::Internal(format!("the build task failed: {e}"))))?
        .map_err(skill_error)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn read_skill_file(file: &FsPath) -> ApiResult<String> {
    let f = file.to_path_buf();
    let data = warren_core::backend::blocking(move || {
        let md = std::fs::metadata(&f).map_err(|e| warren_core::Error::io(format!("reading {}", f.display()), e))?;
        if !md.is_file() || md.len() > warren_skill::format::MAX_SKILL_BYTES as u64 {
            return Err(warren_core::Error::InvalidRequest(format!(
                "{} is not a skill file of at most {} bytes",
                f.display(),
                warren_skill::format::MAX_SKILL_BYTES
            )));
        }
        std::fs::read(&f).map_err(|e| warren_core::Error::io(format!("reading {}", f.display()), e))
    })
    .await
    .map_err(|e| match e {
        // The admin named the file: say which and why, not "internal error".
        warren_core::Error::Io { what, source } => ApiError::bad_request(format!("{what}: {source}")),
        other => ApiError::from(other),
    })?;
    String::from_utf8(data).map_err(|_| ApiError::bad_request(format!("{} is not UTF-8 text", file.display())))
}

/// Lists sandboxes, oldest first: an admin's are all, anyone else's their own. Each with its
/// state on the host now (no stats: ask for one sandbox).
#[utoipa::path(get, path = "/v1/skills", tag = "skills", security(("bearer" = [])),
    responses((status = 200, body = Vec<Sandbox>), (status = 401, body = ErrorBody)))]
pub async fn list_skills(State(s): State<AppState>, Extension(c): Extension<Caller>) -> ApiResult<Json<Vec<Sandbox>>> {
    let skills = Skills::new(&s.engine);
    let mut out = Vec::new();
    for rec in skills.list().await.map_err(skill_error)? {
        if c.principal.admin || rec.owner.as_ref() == Some(&c.principal.user) {
            out.push(skills.view(rec, false).await);
        }
    }
    Ok(Json(out))
}

/// One sandbox: its skill, build log, state on the host and resource usage now.
#[utoipa::path(get, path = "/v1/skills/{id}", tag = "skills", security(("bearer" = [])),
    params(("id" = String, Path, description = "the sandbox (`skill.` + 12 hex digits)")),
    responses((status = 200, body = Sandbox), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_skill(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let (_, rec) = authorize(&s, &c, &id).await?;
    Ok(Json(Skills::new(&s.engine).view(rec, true).await))
}

/// Removes a sandbox: its workspace (processes, home), its snapshots and its record. An admin
/// may also remove a sandbox workspace whose record is gone.
#[utoipa::path(delete, path = "/v1/skills/{id}", tag = "skills", security(("bearer" = [])),
    params(("id" = String, Path, description = "the sandbox")),
    responses((status = 200, body = Cleanup), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cleanup_skill(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Cleanup>> {
    let id = match authorize(&s, &c, &id).await {
        Ok((id, _)) => id,
        Err(e) if e.status == StatusCode::NOT_FOUND && c.principal.admin => SandboxId::new(id).map_err(skill_error)?,
        Err(e) => return Err(e),
    };
    Ok(Json(Skills::new(&s.engine).cleanup(&id).await.map_err(skill_error)?))
}

/// Runs a tool in a sandbox. The body is the tool's arguments (`WriteFileArgs`,
/// `ReadFileArgs`, `ListFilesArgs`, `RunCommandArgs`, `RunPythonArgs`); the answer is a
/// `ToolResult` whether or not the call succeeded inside (see `ok`, `exit_code`, `error`).
#[utoipa::path(post, path = "/v1/skills/{id}/tools/{tool}", tag = "skills", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "the sandbox"),
        ("tool" = ToolName, Path, description = "write_file, read_file, list_files, run_command or run_python"),
    ),
    request_body(content = Object, description = "the tool's arguments (the *Args schemas); an empty body is `{}`"),
    responses(
        (status = 200, body = ToolResult),
        (status = 400, description = "malformed arguments", body = ErrorBody),
        (status = 403, description = "not the caller's sandbox, or a tool its skill does not allow (`tool_not_allowed`)", body = ErrorBody),
        (status = 404, description = "no such sandbox, or no such tool (`unknown_tool`)", body = ErrorBody),
        (status = 409, description = "the sandbox is not ready", body = ErrorBody),
    ))]
pub async fn call_tool(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((id, tool)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Json<ToolResult>> {
    let (_, rec) = authorize(&s, &c, &id).await?;
    let args: serde_json::Value = parse_json(&body)?;
    drop(body);
    let result = warren_skill::tools::call(&s.engine, &rec, &tool, args).await.map_err(skill_error)?;
    Ok(Json(result))
}
