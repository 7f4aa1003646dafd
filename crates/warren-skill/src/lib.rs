//! Skill sandboxes: a skill file (Markdown with a YAML front matter, see [`format`] and
//! docs/skills.md) becomes a sandbox, a workspace of its own in the engine, with the skill's
//! files, packages, environment, limits and network setting; its tools ([`tools`]) then run in
//! it and answer in one JSON shape.
//!
//! * **Ids.** A sandbox is `skill.<12 hex>` ([`SandboxId`]); the same string is the user id that
//!   owns its workspace in the engine, a reserved prefix no token may name. It shows up in
//!   `warren workspace list`, the metrics and the audit trail like any workspace.
//! * **Records.** `{state}/skills/{id}.json` ([`record`]), written atomically before the
//!   workspace is created (status `building`) and again when the build ends (`ready`). A build
//!   that fails removes the workspace and the record; one whose process died stays `building`
//!   and [`Skills::cleanup`] removes it.
//! * **Build** ([`build`]): create the workspace (the skill's limits over the configured
//!   defaults, its network setting, the requested backend), start it, write the skill's files,
//!   copy the package files into `~/.skill/packages`, then inside the sandbox, as its own user:
//!   `python3 -m venv ~/.venv` and `pip install --no-index --find-links` of the wheels (python),
//!   or `npm install --offline` of the tarballs into `~/node_modules` (node). Package names
//!   (from an index) need `network: true`.
//! * **Tools** ([`tools`]): `write_file`, `read_file`, `list_files` (through the engine's
//!   confined file operations), `run_command`, `run_python` (through `Engine::exec`, with the
//!   skill's environment, workdir and timeout). A tool the skill does not list is refused.
//! * **Cleanup**: the workspace (processes, home, account), its snapshots, the record. The uid
//!   the engine allocated stays reserved to that id, as every uid does.
//!
//! Access is the caller's business: a record names its `owner` (the API caller who built it,
//! none for the local CLI); the server lets only that owner and admins reach it.

pub mod build;
pub mod error;
pub mod format;
pub mod record;
pub mod tools;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warren_core::{Error, Stats};
use warren_engine::Engine;

pub use build::{BuildRequest, PackageSource, MAX_SANDBOXES_PER_OWNER};
pub use error::{Result, SkillError};
pub use format::{parse, Package, Runtime, Skill, ToolName};
pub use record::{BuildLog, BuildStatus, BuildStep, InstalledPackage, Records, SandboxId, SandboxRecord};
pub use tools::{Encoding, FileInfo, ToolError, ToolResult};

/// A sandbox's limits as the workspace has them (`null`: unlimited), with the skill's timeouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxLimits {
    /// Memory, bytes.
    pub memory_bytes: Option<u64>,
    /// CPU, thousandths of a core.
    pub cpu_millis: Option<u32>,
    /// Processes and threads.
    pub pids: Option<u32>,
    /// Disk, bytes.
    pub disk_bytes: Option<u64>,
    /// Open files per process.
    pub nofile: u64,
    /// Longest a tool call may run.
    pub timeout_ms: u64,
    /// Longest each build command may run.
    pub build_timeout_ms: u64,
}

/// Resource usage now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxStats {
    /// CPU time used since start, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes, as the backend enforces it.
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    /// Disk used by its files, bytes.
    pub disk_bytes: u64,
}

impl From<Stats> for SandboxStats {
    fn from(s: Stats) -> Self {
        Self {
            cpu_usage_ns: s.cpu_usage_ns,
            memory_bytes: s.memory_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            pids: s.pids,
            disk_bytes: s.disk_bytes,
        }
    }
}

/// A sandbox as callers see it (`warren skill show --json`, `GET /v1/skills/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sandbox {
    /// Its id (`skill.` + 12 hex digits); also the user id owning its workspace.
    #[schema(example = "skill.3f2a9c0b7d1e")]
    pub id: String,
    /// The skill's name.
    pub name: String,
    /// The skill's description.
    pub description: String,
    /// The skill's runtime.
    pub runtime: Runtime,
    /// Who built it over the API (`null`: the local CLI).
    pub owner: Option<String>,
    /// The build's state.
    pub status: BuildStatus,
    /// The backend holding it.
    pub backend: String,
    /// Its workspace.
    pub workspace_id: Option<String>,
    /// `running`, `stopped` or `absent`, as the host shows it now.
    pub state: Option<String>,
    /// Network beyond loopback.
    pub network: bool,
    /// Limits.
    pub limits: SandboxLimits,
    /// The tools it allows.
    pub tools: Vec<ToolName>,
    /// Its packages.
    pub packages: Vec<InstalledPackage>,
    /// The files the skill created, relative to the workdir.
    pub files: Vec<String>,
    /// The environment of its tools (over the runtime's).
    pub environment: BTreeMap<String, String>,
    /// The directory its tools work in, relative to the home (`.`: the home).
    pub workdir: String,
    /// `$HOME` inside it.
    pub home: Option<String>,
    /// The skill's instructions (the Markdown body).
    pub instructions: String,
    /// What the build did.
    pub build: BuildLog,
    /// Why the build failed (status `failed`).
    pub error: Option<String>,
    /// When it was built (RFC 3339, UTC).
    pub created_at: String,
    /// Resource usage now (`warren skill show`, `GET /v1/skills/{id}`; not in lists).
    pub stats: Option<SandboxStats>,
}

/// What a cleanup removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cleanup {
    /// The sandbox.
    pub id: String,
    /// Its workspace was there and is gone (processes, home, account).
    pub workspace_removed: bool,
    /// Snapshots of it deleted.
    pub snapshots_removed: u64,
    /// Its record was there and is gone.
    pub record_removed: bool,
}

/// The skill sandboxes of an engine.
#[derive(Debug)]
pub struct Skills<'e> {
    engine: &'e Engine,
    records: Records,
}

impl<'e> Skills<'e> {
    /// The sandboxes of `engine` (records in `{state}/skills`).
    pub fn new(engine: &'e Engine) -> Self {
        Self { engine, records: Records::new(&engine.config().state_dir) }
    }

    /// The records.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Builds a sandbox (see [`build`]).
    pub async fn build(&self, req: BuildRequest) -> Result<SandboxRecord> {
        build::build(self.engine, &self.records, req).await
    }

    /// The record of `id`.
    pub async fn get(&self, id: &SandboxId) -> Result<SandboxRecord> {
        self.records.load(id).await
    }

    /// Every record, oldest first.
    pub async fn list(&self) -> Result<Vec<SandboxRecord>> {
        self.records.list().await
    }

    /// How callers see `rec`: with its live state, and its resource usage when `stats`.
    pub async fn view(&self, rec: SandboxRecord, stats: bool) -> Sandbox {
        let user = rec.id.user().ok();
        let mut state = None;
        let mut usage = None;
        if let Some(user) = &user {
            match self.engine.status(user).await {
                Ok(info) => {
                    state = Some(info.state.to_string());
                    if stats {
                        match self.engine.stats(user).await {
                            Ok(s) => usage = Some(s.into()),
                            Err(e) => tracing::debug!(sandbox = %rec.id, error = %e, "no stats"),
                        }
                    }
                }
                Err(Error::NotFound(_)) => state = Some("absent".to_owned()),
                Err(e) => tracing::warn!(sandbox = %rec.id, error = %e, "asking for the sandbox's state failed"),
            }
        }
        let s = rec.skill;
        Sandbox {
            id: rec.id.to_string(),
            name: s.name,
            description: s.description,
            runtime: s.runtime,
            owner: rec.owner.map(|o| o.to_string()),
            status: rec.status,
            backend: rec.backend.to_string(),
            workspace_id: rec.workspace_id.map(|w| w.to_string()),
            state,
            network: s.network,
            limits: SandboxLimits {
                memory_bytes: rec.limits.memory_bytes,
                cpu_millis: rec.limits.cpu_millis,
                pids: rec.limits.pids,
                disk_bytes: rec.limits.disk_bytes,
                nofile: rec.limits.nofile,
                timeout_ms: s.limits.tool_timeout_ms,
                build_timeout_ms: s.limits.build_timeout_ms,
            },
            tools: s.tools,
            packages: rec.build.packages.clone(),
            files: s.files.iter().map(|f| f.path.to_string()).collect(),
            environment: s.environment,
            workdir: s.workdir.to_string(),
            home: rec.home,
            instructions: s.instructions,
            build: rec.build,
            error: rec.error,
            created_at: rec.created_at.to_string(),
            stats: usage,
        }
    }

    /// Runs `tool` with `args` (JSON; `null` for none) in sandbox `id`.
    pub async fn call(&self, id: &SandboxId, tool: &str, args: serde_json::Value) -> Result<ToolResult> {
        let rec = self.records.load(id).await?;
        tools::call(self.engine, &rec, tool, args).await
    }

    /// Removes sandbox `id`: its workspace (processes, home, account), its snapshots and its
    /// record. A workspace left without a record (by a crash) is removed too. `NotFound` when
    /// there is neither.
    pub async fn cleanup(&self, id: &SandboxId) -> Result<Cleanup> {
        let user = id.user()?;
        let had_record = match self.records.load(id).await {
            Ok(_) => true,
            Err(SkillError::NotFound(_)) => false,
            // A damaged record must not keep the sandbox alive.
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cleaning up a sandbox whose record cannot be read");
                true
            }
        };
        let workspace_removed = match self.engine.destroy(&user).await {
            Ok(()) => true,
            Err(Error::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let mut snapshots_removed = 0;
        for m in self.engine.snapshot_list(&user).await? {
            match self.engine.snapshot_delete(&user, &m.id).await {
                Ok(()) => snapshots_removed += 1,
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let record_removed = self.records.remove(id).await?;
        // The sandbox's user never comes back: its lock file goes too.
        self.engine.forget_lock(&user).await?;
        if !had_record && !workspace_removed && snapshots_removed == 0 && !record_removed {
            return Err(SkillError::NotFound(id.to_string()));
        }
        let detail = serde_json::json!({
            "sandbox": id.as_str(),
            "workspace_removed": workspace_removed,
            "snapshots_removed": snapshots_removed,
        });
        if let Err(e) = self.engine.audit(Some(&user), "skill_cleanup", detail).await {
            tracing::warn!(error = %e, "recording the skill cleanup in the audit trail failed");
        }
        tracing::info!(sandbox = %id, workspace_removed, snapshots_removed, "cleaned up a skill sandbox");
        Ok(Cleanup { id: id.to_string(), workspace_removed, snapshots_removed, record_removed })
    }
}
