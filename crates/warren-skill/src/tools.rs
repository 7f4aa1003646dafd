//! The tools a sandbox offers, their arguments and their one result shape.
//!
//! A call that cannot start (unknown sandbox, a tool the skill does not allow, malformed
//! arguments) is an `Err`; a call that ran, or tried to and failed on the way (a missing file,
//! a path that leaves the sandbox, a command that timed out), is a [`ToolResult`] with `ok` and
//! `error` telling how it went.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warren_core::backend::blocking;
use warren_core::fs::{DirEntry, FileKind};
use warren_core::{ExecOutput, ExecRequest, UserId, WorkspacePath};
use warren_engine::Engine;

use crate::error::{Result, SkillError};
use crate::format::{Runtime, ToolName};
use crate::record::SandboxRecord;

/// Most bytes of stdout (and of stderr) a run tool returns; the rest is dropped (`truncated`).
pub const MAX_TOOL_OUTPUT: usize = 1 << 20;
/// `read_file` returns at most this many bytes unless asked for fewer or more (up to
/// [`MAX_READ_BYTES`]).
pub const DEFAULT_READ_BYTES: u64 = 1 << 20;
/// Most bytes `read_file` returns.
pub const MAX_READ_BYTES: u64 = 16 << 20;
/// Most entries `list_files` returns (the first ones by name; `truncated` beyond).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Largest file `write_file` writes, and largest `run_python` program.
pub const MAX_WRITE_BYTES: usize = 32 << 20;

/// How bytes travel in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text (on output, invalid sequences become U+FFFD).
    #[default]
    Utf8,
    /// Standard base64 with padding (exact bytes).
    Base64,
}

/// `write_file` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// File path, relative to the skill's workdir; parent directories are created.
    pub path: String,
    /// The content, in `encoding`.
    pub content: String,
    /// How `content` is encoded (default utf8).
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits, octal (default `644`).
    pub mode: Option<String>,
}

/// `read_file` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// File path, relative to the skill's workdir.
    pub path: String,
    /// How to return the content (default utf8).
    #[serde(default)]
    pub encoding: Encoding,
    /// Return at most this many bytes (default 1 MiB, at most 16 MiB); a longer file is cut
    /// (`truncated`).
    pub max_bytes: Option<u64>,
}

/// `list_files` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilesArgs {
    /// Directory, relative to the skill's workdir (default: the workdir).
    pub path: Option<String>,
}

/// `run_command` arguments: exactly one of `command` (a shell command line, run by `/bin/sh -c`)
/// and `argv` (a program and its arguments, no shell).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCommandArgs {
    /// A shell command line.
    pub command: Option<String>,
    /// A program and its arguments.
    pub argv: Option<Vec<String>>,
    /// Working directory, relative to the skill's workdir.
    pub cwd: Option<String>,
    /// Extra environment (over the skill's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Standard input (text), closed after it.
    pub stdin: Option<String>,
    /// Kill it after this many milliseconds (default and most: the skill's `limits.timeout`).
    pub timeout_ms: Option<u64>,
    /// How to return stdout and stderr (default utf8).
    #[serde(default)]
    pub encoding: Encoding,
}

/// `run_python` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPythonArgs {
    /// The program (run from a temporary file by the sandbox's Python: the skill's virtual
    /// environment for a python skill, else `python3`).
    pub code: String,
    /// Arguments (`sys.argv[1:]`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory, relative to the skill's workdir.
    pub cwd: Option<String>,
    /// Extra environment (over the skill's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Standard input (text), closed after it.
    pub stdin: Option<String>,
    /// Kill it after this many milliseconds (default and most: the skill's `limits.timeout`).
    pub timeout_ms: Option<u64>,
    /// How to return stdout and stderr (default utf8).
    #[serde(default)]
    pub encoding: Encoding,
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileInfo {
    /// Name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Size, bytes.
    pub size: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl From<DirEntry> for FileInfo {
    fn from(e: DirEntry) -> Self {
        let kind = match e.kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        };
        Self {
            name: e.name,
            kind: kind.to_owned(),
            size: e.size,
            mode: format!("{:o}", e.mode & 0o7777),
            mtime: e.mtime,
        }
    }
}

/// Why a tool call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolError {
    /// Stable code: `not_found`, `invalid_path`, `invalid_request`, `timeout`, `conflict`, `io`, ...
    pub code: String,
    /// What failed.
    pub message: String,
}

/// The result of every tool: the same keys always (`null` where they do not apply).
///
/// `ok` is true when the call did what it was asked: no `error`, and for the run tools exit
/// code 0. A command that exits non-zero is `ok: false` with its `exit_code` and no `error`;
/// one killed by the timeout has `timed_out` and an `error` with code `timeout`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolResult {
    /// The tool.
    pub tool: ToolName,
    /// It did what it was asked.
    pub ok: bool,
    /// Run tools: the exit code (128 + signal when a signal killed it).
    pub exit_code: Option<i32>,
    /// Run tools: the signal that killed it.
    pub signal: Option<i32>,
    /// Run tools: standard output, in `encoding` (at most 1 MiB).
    pub stdout: Option<String>,
    /// Run tools: standard error, in `encoding` (at most 1 MiB).
    pub stderr: Option<String>,
    /// `read_file`: the content, in `encoding`.
    pub content: Option<String>,
    /// `list_files`: the entries, sorted by name (at most 10,000).
    pub entries: Option<Vec<FileInfo>>,
    /// File tools: the path, relative to the skill's workdir.
    pub path: Option<String>,
    /// `write_file`: bytes written; `read_file`: the file's size.
    pub bytes: Option<u64>,
    /// How `stdout`, `stderr` and `content` are encoded.
    pub encoding: Encoding,
    /// Run tools: killed because the timeout passed.
    pub timed_out: bool,
    /// Output or content was cut.
    pub truncated: bool,
    /// Wall time of the call.
    pub duration_ms: u64,
    /// Why it failed, when it failed other than by a non-zero exit.
    pub error: Option<ToolError>,
}

impl ToolResult {
    fn new(tool: ToolName, encoding: Encoding) -> Self {
        Self {
            tool,
            ok: false,
            exit_code: None,
            signal: None,
            stdout: None,
            stderr: None,
            content: None,
            entries: None,
            path: None,
            bytes: None,
            encoding,
            timed_out: false,
            truncated: false,
            duration_ms: 0,
            error: None,
        }
    }

    fn fail(mut self, e: &warren_core::Error) -> Self {
        self.ok = false;
        self.error = Some(ToolError { code: e.code().to_owned(), message: e.to_string() });
        self
    }
}

/// The arguments of `tool`; no arguments at all (`null`) read as `{}`.
fn args<T: DeserializeOwned>(tool: ToolName, v: serde_json::Value) -> Result<T> {
    let v = if v.is_null() { serde_json::Value::Object(serde_json::Map::new()) } else { v };
    serde_json::from_value(v).map_err(|e| SkillError::InvalidArgs { tool: tool.to_string(), message: e.to_string() })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn encode(bytes: &[u8], enc: Encoding, cap: usize, truncated: &mut bool) -> String {
    let bytes = if bytes.len() > cap {
        *truncated = true;
        &bytes[..cap]
    } else {
        bytes
    };
    match enc {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// A path relative to the workdir, checked; `Err` is a tool failure (the result's `error`).
fn rel(workdir: &WorkspacePath, p: &str) -> warren_core::Result<(WorkspacePath, WorkspacePath)> {
    let p = WorkspacePath::new(p)?;
    Ok((workdir.join(&p), p))
}

/// Runs `tool` with `raw` arguments in the sandbox of `rec`.
pub async fn call(engine: &Engine, rec: &SandboxRecord, tool: &str, raw: serde_json::Value) -> Result<ToolResult> {
    let tool: ToolName = tool.parse()?;
    if !rec.skill.allows(tool) {
        return Err(SkillError::ToolNotAllowed {
            id: rec.id.to_string(),
            tool: tool.to_string(),
            allowed: rec.skill.tools.iter().map(ToString::to_string).collect(),
        });
    }
    if rec.status != crate::record::BuildStatus::Ready {
        return Err(warren_core::Error::Conflict(format!(
            "sandbox {} is not ready (its build is {}); clean it up with `warren skill cleanup {}`",
            rec.id,
            match rec.status {
                crate::record::BuildStatus::Building => "unfinished",
                _ => "failed",
            },
            rec.id
        ))
        .into());
    }
    let user = rec.id.user()?;
    let started = Instant::now();
    let mut result = match tool {
        ToolName::WriteFile => write_file(engine, rec, &user, args(tool, raw)?).await?,
        ToolName::ReadFile => read_file(engine, rec, &user, args(tool, raw)?).await?,
        ToolName::ListFiles => list_files(engine, rec, &user, args(tool, raw)?).await?,
        ToolName::RunCommand => run_command(engine, rec, &user, args(tool, raw)?).await?,
        ToolName::RunPython => run_python(engine, rec, &user, args(tool, raw)?).await?,
    };
    result.duration_ms = millis(started.elapsed());
    Ok(result)
}

async fn write_file(engine: &Engine, rec: &SandboxRecord, user: &UserId, a: WriteFileArgs) -> Result<ToolResult> {
    let tool = ToolName::WriteFile;
    let mut r = ToolResult::new(tool, a.encoding);
    let bad = |m: String| SkillError::InvalidArgs { tool: tool.to_string(), message: m };
    let mode = match a.mode.as_deref() {
        None => 0o644,
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|v| *v <= 0o777)
            .ok_or_else(|| bad(format!("mode {m:?} is not octal permission bits like 644")))?,
    };
    let data = match a.encoding {
        Encoding::Utf8 => a.content.into_bytes(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(a.content.as_bytes())
            .map_err(|e| bad(format!("content is not base64: {e}")))?,
    };
    if data.len() > MAX_WRITE_BYTES {
        return Err(bad(format!("content is {} bytes, more than the {MAX_WRITE_BYTES}-byte limit", data.len())));
    }
    let (full, shown) = match rel(&rec.skill.workdir, &a.path) {
        Ok(p) => p,
        Err(e) => return Ok(r.fail(&e)),
    };
    r.path = Some(shown.to_string());
    let n = data.len() as u64;
    match engine.write_file(user, &full, data, mode).await {
        Ok(()) => {
            r.ok = true;
            r.bytes = Some(n);
            Ok(r)
        }
        Err(e) => Ok(r.fail(&e)),
    }
}

async fn read_file(engine: &Engine, rec: &SandboxRecord, user: &UserId, a: ReadFileArgs) -> Result<ToolResult> {
    let tool = ToolName::ReadFile;
    let mut r = ToolResult::new(tool, a.encoding);
    let max = a.max_bytes.unwrap_or(DEFAULT_READ_BYTES);
    if max > MAX_READ_BYTES {
        return Err(SkillError::InvalidArgs {
            tool: tool.to_string(),
            message: format!(
                "max_bytes {max} is more than {MAX_READ_BYTES}; read a large file in parts with run_command"
            ),
        });
    }
    let (full, shown) = match rel(&rec.skill.workdir, &a.path) {
        Ok(p) => p,
        Err(e) => return Ok(r.fail(&e)),
    };
    r.path = Some(shown.to_string());
    let files = match engine.files(user).await {
        Ok(f) => f,
        Err(e) => return Ok(r.fail(&e)),
    };
    let read = blocking(move || {
        let (file, entry) = files.open_read(&full)?;
        let mut buf = Vec::with_capacity(entry.size.min(max) as usize);
        file.take(max + 1).read_to_end(&mut buf).map_err(|e| warren_core::Error::io(format!("reading {full}"), e))?;
        Ok((buf, entry.size))
    })
    .await;
    match read {
        Ok((buf, size)) => {
            let mut truncated = false;
            r.content = Some(encode(&buf, a.encoding, usize::try_from(max).unwrap_or(usize::MAX), &mut truncated));
            r.truncated = truncated;
            r.bytes = Some(size);
            r.ok = true;
            Ok(r)
        }
        Err(e) => Ok(r.fail(&e)),
    }
}

async fn list_files(engine: &Engine, rec: &SandboxRecord, user: &UserId, a: ListFilesArgs) -> Result<ToolResult> {
    let mut r = ToolResult::new(ToolName::ListFiles, Encoding::Utf8);
    let (full, shown) = match rel(&rec.skill.workdir, a.path.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return Ok(r.fail(&e)),
    };
    r.path = Some(shown.to_string());
    match engine.list_files(user, &full).await {
        Ok(list) => {
            r.truncated = list.len() > MAX_LIST_ENTRIES;
            r.entries = Some(list.into_iter().take(MAX_LIST_ENTRIES).map(FileInfo::from).collect());
            r.ok = true;
            Ok(r)
        }
        Err(e) => Ok(r.fail(&e)),
    }
}

/// The environment of a tool command: the runtime's, then the skill's, then the call's.
pub fn environment(rec: &SandboxRecord, extra: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let home = rec.home.clone().unwrap_or_default();
    let base_path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
    match rec.skill.runtime {
        Runtime::Python => {
            env.insert("VIRTUAL_ENV".into(), format!("{home}/.venv"));
            env.insert("PATH".into(), format!("{home}/.venv/bin:{base_path}"));
            env.insert("PYTHONUNBUFFERED".into(), "1".into());
        }
        Runtime::Node => {
            env.insert("NODE_PATH".into(), format!("{home}/node_modules"));
            env.insert("PATH".into(), format!("{home}/node_modules/.bin:{base_path}"));
        }
        Runtime::Shell => {}
    }
    env.extend(rec.skill.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.into_iter().collect()
}

struct Run {
    tool: ToolName,
    argv: Vec<String>,
    cwd: Option<String>,
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    timeout_ms: Option<u64>,
    encoding: Encoding,
}

async fn run(engine: &Engine, rec: &SandboxRecord, user: &UserId, run: Run) -> Result<ToolResult> {
    let tool = run.tool;
    let r = ToolResult::new(tool, run.encoding);
    let limit = rec.skill.limits.tool_timeout_ms;
    let timeout_ms = run.timeout_ms.unwrap_or(limit);
    if timeout_ms == 0 || timeout_ms > limit {
        return Err(SkillError::InvalidArgs {
            tool: tool.to_string(),
            message: format!("timeout_ms must be between 1 and {limit} (the skill's limits.timeout)"),
        });
    }
    let cwd = match rel(&rec.skill.workdir, run.cwd.as_deref().unwrap_or("")) {
        Ok((full, _)) => full,
        Err(e) => return Ok(r.fail(&e)),
    };
    let req = ExecRequest {
        argv: run.argv,
        env: environment(rec, &run.env),
        cwd: (!cwd.is_root()).then(|| cwd.to_string()),
        stdin: Some(run.stdin.unwrap_or_default().into_bytes()),
        timeout: Some(Duration::from_millis(timeout_ms)),
        tty: None,
    };
    req.validate().map_err(|e| SkillError::InvalidArgs { tool: tool.to_string(), message: e.to_string() })?;
    if let Err(e) = engine.ensure_running(user).await {
        return Ok(r.fail(&e));
    }
    match engine.exec(user, req).await {
        Ok(out) => Ok(finish(r, out, timeout_ms)),
        Err(e) => Ok(r.fail(&e)),
    }
}

fn finish(mut r: ToolResult, out: ExecOutput, timeout_ms: u64) -> ToolResult {
    let mut truncated = out.truncated;
    r.stdout = Some(encode(&out.stdout, r.encoding, MAX_TOOL_OUTPUT, &mut truncated));
    r.stderr = Some(encode(&out.stderr, r.encoding, MAX_TOOL_OUTPUT, &mut truncated));
    r.truncated = truncated;
    r.exit_code = Some(out.exit_code);
    r.signal = out.signal;
    r.timed_out = out.timed_out;
    if out.timed_out {
        r.error = Some(ToolError {
            code: "timeout".into(),
            message: format!("the command ran longer than {timeout_ms} ms and was killed"),
        });
    }
    r.ok = r.error.is_none() && out.exit_code == 0;
    r
}

async fn run_command(engine: &Engine, rec: &SandboxRecord, user: &UserId, a: RunCommandArgs) -> Result<ToolResult> {
    let tool = ToolName::RunCommand;
    let argv = match (a.command, a.argv) {
        (Some(c), None) => vec!["/bin/sh".to_owned(), "-c".to_owned(), c],
        (None, Some(v)) if !v.is_empty() => v,
        _ => {
            return Err(SkillError::InvalidArgs {
                tool: tool.to_string(),
                message: "give exactly one of command (a shell command line) and argv (a program and its arguments)"
                    .into(),
            })
        }
    };
    let run_args =
        Run { tool, argv, cwd: a.cwd, env: a.env, stdin: a.stdin, timeout_ms: a.timeout_ms, encoding: a.encoding };
    run(engine, rec, user, run_args).await
}

async fn run_python(engine: &Engine, rec: &SandboxRecord, user: &UserId, a: RunPythonArgs) -> Result<ToolResult> {
    let tool = ToolName::RunPython;
    if a.code.len() > MAX_WRITE_BYTES {
        return Err(SkillError::InvalidArgs {
            tool: tool.to_string(),
            message: format!("code is {} bytes, more than the {MAX_WRITE_BYTES}-byte limit", a.code.len()),
        });
    }
    let home = rec.home.clone().unwrap_or_default();
    let python = match rec.skill.runtime {
        Runtime::Python => format!("{home}/.venv/bin/python"),
        _ => "python3".to_owned(),
    };
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd)
        .map_err(|e| warren_core::Error::Internal(format!("the kernel gave no random bytes: {e}")))?;
    let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let script = WorkspacePath::new(format!(".skill/tmp/run-{name}.py"))?;
    if let Err(e) = engine.write_file(user, &script, a.code.into_bytes(), 0o600).await {
        return Ok(ToolResult::new(tool, a.encoding).fail(&e));
    }
    let mut argv = vec![python, format!("{home}/{script}")];
    argv.extend(a.args);
    let run_args =
        Run { tool, argv, cwd: a.cwd, env: a.env, stdin: a.stdin, timeout_ms: a.timeout_ms, encoding: a.encoding };
    let result = run(engine, rec, user, run_args).await;
    if let Err(e) = engine.delete_file(user, &script, false).await {
        tracing::debug!(error = %e, "removing the run_python program file failed");
    }
    result
}
