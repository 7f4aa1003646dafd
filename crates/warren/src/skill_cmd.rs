//! `warren skill ...`: sandboxes built from skill files (docs/skills.md) and their tools, on the
//! local engine or through a server (`--url`). Both modes print the same.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};
use warren_engine::Engine;
use warren_skill::{BuildRequest, Cleanup, Encoding, PackageSource, Sandbox, SandboxId, Skills, ToolName, ToolResult};

use crate::client::{Body, Client};
use crate::units;

const EXAMPLES: &str = "\
Examples:
  ID=$(warren skill build examples/skills/csv-stats.md)
  warren skill tool $ID run_python --code 'import csvstats; print(csvstats.__version__)'
  warren skill tool $ID write_file --path data/in.csv < local.csv
  warren skill tool $ID read_file --path data/in.csv
  warren skill tool $ID list_files
  warren skill tool $ID run_command -- sh -c 'wc -l data/*.csv'
  warren skill tool $ID run_command --args '{\"command\": \"ls -la\", \"timeout_ms\": 5000}' --json
  warren skill show $ID
  warren skill cleanup $ID

The skill file format: docs/skills.md and examples/skills/. The sandbox's backend is --backend
(or the configured one); with --url the server picks it.";

/// The `skill` subcommands.
#[derive(Debug, Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum SkillCmd {
    /// Build a sandbox from a skill file (packages installed inside it) and print its id.
    #[command(after_help = "\
Examples:
  warren skill build examples/skills/csv-stats.md
  warren --backend ns skill build my-skill.md --json

Package files the skill lists are read relative to the skill file. A failed build removes
everything it made and says which step failed, with the end of its output.")]
    Build {
        /// The skill file (Markdown with a YAML front matter).
        file: PathBuf,
    },
    /// List the sandboxes (with --url: the caller's own, or all for an admin).
    #[command(after_help = "Examples:\n  warren skill list\n  warren skill list --json")]
    List,
    /// Show a sandbox: its skill, build, state and resource usage now.
    #[command(
        after_help = "Examples:\n  warren skill show skill.3f2a9c0b7d1e\n  warren skill show skill.3f2a9c0b7d1e --json"
    )]
    Show {
        /// The sandbox id (`skill.` + 12 hex digits).
        id: String,
    },
    /// Run a tool in a sandbox: write_file, read_file, list_files, run_command, run_python.
    #[command(after_help = "\
Examples:
  warren skill tool ID run_python --code 'print(1 + 1)'
  echo 'import sys; print(sys.version)' | warren skill tool ID run_python
  warren skill tool ID run_command -- ls -la
  warren skill tool ID write_file --path notes.txt --content hello
  warren skill tool ID read_file --path notes.txt
  warren skill tool ID list_files --path data --json
  warren skill tool ID run_command --args '{\"command\": \"sleep 5\", \"timeout_ms\": 1000}'

--args gives the arguments as JSON (docs/skills.md lists them per tool); the flags fill in or
override fields. Without --json, a run tool's output goes to stdout and stderr and the exit code
is the command's (124 if the timeout killed it); read_file prints the file; list_files a
listing. With --json the tool's JSON result is printed as it is.")]
    Tool(Box<ToolArgs>),
    /// Remove a sandbox: its workspace (processes, files), snapshots and record.
    #[command(after_help = "Example:\n  warren skill cleanup skill.3f2a9c0b7d1e")]
    Cleanup {
        /// The sandbox id.
        id: String,
    },
}

/// `warren skill tool`.
#[derive(Debug, Args)]
pub struct ToolArgs {
    /// The sandbox id.
    id: String,
    /// The tool.
    tool: String,
    /// The tool's arguments as a JSON object.
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// File or directory, relative to the skill's workdir (the file tools).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Content to write (write_file; default: stdin).
    #[arg(long, value_name = "TEXT")]
    content: Option<String>,
    /// Permission bits, octal (write_file).
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// Python code (run_python; default: stdin).
    #[arg(long, value_name = "CODE")]
    code: Option<String>,
    /// Working directory, relative to the skill's workdir (run tools).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Set an environment variable (run tools; repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = units::parse_env)]
    env: Vec<(String, String)>,
    /// Kill the command after this long (run tools; at most the skill's limits.timeout).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    timeout: Option<Duration>,
    /// run_command: the program and its arguments; run_python: the program's arguments.
    #[arg(trailing_var_arg = true, value_name = "ARGS")]
    rest: Vec<String>,
}

fn sandbox_id(raw: &str) -> Result<SandboxId> {
    SandboxId::new(raw).map_err(|e| anyhow!("{e}"))
}

fn read_stdin(what: &str) -> Result<Vec<u8>> {
    if std::io::stdin().is_terminal() {
        bail!("{what}");
    }
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf).context("reading stdin")?;
    Ok(buf)
}

/// The tool's JSON arguments from `--args` and the flags; `exact` asks for base64 output (the
/// text mode decodes it) unless the caller chose an encoding.
fn tool_args(a: &ToolArgs, json_out: bool) -> Result<(ToolName, Value)> {
    let tool: ToolName = a.tool.parse().map_err(|e| anyhow!("{e}"))?;
    let mut m: Map<String, Value> = match &a.args {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text).context("--args is not JSON")? {
            Value::Object(m) => m,
            _ => bail!("--args must be a JSON object, like '{{\"path\": \"notes.txt\"}}'"),
        },
    };
    match tool {
        ToolName::WriteFile | ToolName::ReadFile | ToolName::ListFiles => {
            if let Some(p) = a.path.clone().or_else(|| a.rest.first().cloned()) {
                set(&mut m, "path", json!(p));
            }
        }
        _ => {
            if let Some(c) = &a.cwd {
                set(&mut m, "cwd", json!(c));
            }
            if !a.env.is_empty() {
                let env: BTreeMap<&str, &str> = a.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                set(&mut m, "env", json!(env));
            }
            if let Some(t) = a.timeout {
                set(&mut m, "timeout_ms", json!(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
            }
        }
    }
    match tool {
        ToolName::WriteFile => {
            if let Some(mode) = &a.mode {
                set(&mut m, "mode", json!(mode));
            }
            if let Some(c) = &a.content {
                set(&mut m, "content", json!(c));
            } else if !m.contains_key("content") {
                let data = read_stdin("write_file takes the content from --content or stdin")?;
                match String::from_utf8(data) {
                    Ok(text) => set(&mut m, "content", json!(text)),
                    Err(e) => {
                        set(&mut m, "content", json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())));
                        set(&mut m, "encoding", json!("base64"));
                    }
                }
            }
        }
        ToolName::RunCommand => {
            if !a.rest.is_empty() {
                m.remove("command");
                set(&mut m, "argv", json!(a.rest));
            }
        }
        ToolName::RunPython => {
            if let Some(c) = &a.code {
                set(&mut m, "code", json!(c));
            } else if !m.contains_key("code") {
                let data = read_stdin("run_python takes the program from --code or stdin")?;
                set(&mut m, "code", json!(String::from_utf8(data).context("the program on stdin is not UTF-8")?));
            }
            if !a.rest.is_empty() {
                set(&mut m, "args", json!(a.rest));
            }
        }
        ToolName::ReadFile | ToolName::ListFiles => {}
    }
    if !json_out && matches!(tool, ToolName::ReadFile | ToolName::RunCommand | ToolName::RunPython) {
        m.entry("encoding").or_insert_with(|| json!("base64"));
    }
    Ok((tool, Value::Object(m)))
}

fn set(m: &mut Map<String, Value>, k: &str, v: Value) {
    m.insert(k.to_owned(), v);
}

fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    crate::print_json(v)
}

fn decode(s: &str, enc: Encoding) -> Result<Vec<u8>> {
    match enc {
        Encoding::Utf8 => Ok(s.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(s).context("the tool sent bad base64"),
    }
}

/// Prints a tool's result; returns the exit code.
fn print_result(r: &ToolResult, json_out: bool) -> Result<i32> {
    if json_out {
        print_json(r)?;
        return Ok(if r.ok { 0 } else { r.exit_code.filter(|c| *c != 0).unwrap_or(1) });
    }
    let mut out = std::io::stdout().lock();
    match r.tool {
        ToolName::RunCommand | ToolName::RunPython => {
            if let Some(s) = &r.stdout {
                out.write_all(&decode(s, r.encoding)?).context("writing to stdout")?;
            }
            out.flush().context("writing to stdout")?;
            if let Some(s) = &r.stderr {
                let _ = std::io::stderr().write_all(&decode(s, r.encoding)?);
            }
        }
        ToolName::ReadFile => {
            if let Some(c) = &r.content {
                out.write_all(&decode(c, r.encoding)?).context("writing to stdout")?;
            }
            if r.truncated {
                eprintln!(
                    "warning: the file is {} bytes; only the first part was read (--args '{{\"max_bytes\": N}}')",
                    r.bytes.unwrap_or(0)
                );
            }
        }
        ToolName::ListFiles => {
            for e in r.entries.iter().flatten() {
                let suffix = match e.kind.as_str() {
                    "dir" => "/",
                    "symlink" => "@",
                    _ => "",
                };
                writeln!(out, "{:>4} {:>10}  {}{suffix}", e.mode, e.size, e.name)?;
            }
        }
        ToolName::WriteFile => {
            if r.ok {
                writeln!(out, "wrote {} bytes to {}", r.bytes.unwrap_or(0), r.path.as_deref().unwrap_or("?"))?;
            }
        }
    }
    if let Some(e) = &r.error {
        eprintln!("error: {} ({})", e.message, e.code);
    }
    if r.timed_out {
        return Ok(124);
    }
    Ok(match r.exit_code {
        Some(c) => c,
        None if r.ok => 0,
        None => 1,
    })
}

fn print_table(list: &[Sandbox]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<18} {:<20} {:<7} {:<9} {:<8} {:<7} {:<16} CREATED",
        "ID", "NAME", "RUNTIME", "STATUS", "STATE", "BACKEND", "OWNER"
    )?;
    for s in list {
        writeln!(
            out,
            "{:<18} {:<20} {:<7} {:<9} {:<8} {:<7} {:<16} {}",
            s.id,
            s.name,
            s.runtime.as_str(),
            format!("{:?}", s.status).to_lowercase(),
            s.state.as_deref().unwrap_or("?"),
            s.backend,
            s.owner.as_deref().unwrap_or("-"),
            s.created_at
        )?;
    }
    Ok(())
}

fn limit<T: Copy>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "unlimited".to_owned(), f)
}

fn print_show(s: &Sandbox) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let l = &s.limits;
    writeln!(out, "sandbox:     {}", s.id)?;
    writeln!(out, "skill:       {} ({}): {}", s.name, s.runtime.as_str(), s.description)?;
    writeln!(out, "status:      {}", format!("{:?}", s.status).to_lowercase())?;
    writeln!(out, "state:       {}", s.state.as_deref().unwrap_or("?"))?;
    writeln!(out, "backend:     {} (workspace {})", s.backend, s.workspace_id.as_deref().unwrap_or("-"))?;
    writeln!(out, "owner:       {}", s.owner.as_deref().unwrap_or("- (local)"))?;
    writeln!(out, "network:     {}", if s.network { "on" } else { "loopback only" })?;
    writeln!(
        out,
        "limits:      memory {}, cpus {}, pids {}, disk {}, open files {}, tool timeout {} ms",
        limit(l.memory_bytes, units::format_size),
        limit(l.cpu_millis, |m| format!("{}", f64::from(m) / 1000.0)),
        limit(l.pids, |p| p.to_string()),
        limit(l.disk_bytes, units::format_size),
        l.nofile,
        l.timeout_ms
    )?;
    let tools: Vec<&str> = s.tools.iter().map(|t| t.as_str()).collect();
    writeln!(out, "tools:       {}", if tools.is_empty() { "none".to_owned() } else { tools.join(", ") })?;
    for p in &s.packages {
        let size = p.bytes.map(|b| format!(", {}", units::format_size(b))).unwrap_or_default();
        writeln!(out, "package:     {}{size}", p.spec)?;
    }
    if let Some(v) = &s.build.runtime_version {
        writeln!(out, "runtime:     {} {v}", s.runtime.as_str())?;
    }
    let workdir = if s.workdir == "." { "~".to_owned() } else { format!("~/{}", s.workdir) };
    writeln!(out, "workdir:     {workdir}")?;
    writeln!(out, "built:       {} in {} ms", s.created_at, s.build.duration_ms)?;
    if let Some(st) = &s.stats {
        writeln!(
            out,
            "usage:       cpu {:.2} s, memory {}{}, pids {}, disk {}",
            st.cpu_usage_ns as f64 / 1e9,
            units::format_size(st.memory_bytes),
            st.memory_limit_bytes.map(|m| format!(" of {}", units::format_size(m))).unwrap_or_default(),
            st.pids,
            units::format_size(st.disk_bytes)
        )?;
    }
    for w in &s.build.warnings {
        writeln!(out, "warning:     {w}")?;
    }
    if let Some(e) = &s.error {
        writeln!(out, "error:       {e}")?;
    }
    if !s.instructions.trim().is_empty() {
        writeln!(out, "\n{}", s.instructions.trim_end())?;
    }
    Ok(())
}

fn print_built(s: &Sandbox, json_out: bool) -> Result<()> {
    if json_out {
        return print_json(s);
    }
    println!("{}", s.id);
    let version = s.build.runtime_version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
    let packages = match s.packages.len() {
        0 => "no packages".to_owned(),
        1 => "1 package".to_owned(),
        n => format!("{n} packages"),
    };
    eprintln!(
        "built sandbox {} from skill {} ({}{version}, {packages}, backend {}) in {} ms",
        s.id,
        s.name,
        s.runtime.as_str(),
        s.backend,
        s.build.duration_ms
    );
    for w in &s.build.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn print_cleanup(c: &Cleanup, json_out: bool) -> Result<()> {
    if json_out {
        return print_json(c);
    }
    let mut parts = Vec::new();
    if c.workspace_removed {
        parts.push("workspace".to_owned());
    }
    if c.snapshots_removed > 0 {
        parts.push(format!("{} snapshots", c.snapshots_removed));
    }
    if c.record_removed {
        parts.push("record".to_owned());
    }
    println!("removed sandbox {} ({})", c.id, parts.join(", "));
    Ok(())
}

fn read_skill(file: &Path) -> Result<(String, PathBuf)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading skill file {}", file.display()))?;
    let abs = std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?;
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    Ok((text, dir))
}

/// Runs `cmd` on the local engine.
pub async fn run(engine: &Engine, cmd: SkillCmd, json_out: bool) -> Result<i32> {
    let skills = Skills::new(engine);
    match cmd {
        SkillCmd::Build { file } => {
            let (text, dir) = read_skill(&file)?;
            let origin = dir.join(file.file_name().unwrap_or_default()).display().to_string();
            let req = BuildRequest {
                text,
                packages: PackageSource::Dir(dir),
                owner: None,
                backend: None,
                origin,
                max_limits: None,
            };
            let rec = skills.build(req).await?;
            print_built(&skills.view(rec, false).await, json_out)?;
        }
        SkillCmd::List => {
            let mut list = Vec::new();
            for rec in skills.list().await? {
                list.push(skills.view(rec, false).await);
            }
            if json_out {
                print_json(&list)?;
            } else {
                print_table(&list)?;
            }
        }
        SkillCmd::Show { id } => {
            let rec = skills.get(&sandbox_id(&id)?).await?;
            let view = skills.view(rec, true).await;
            if json_out {
                print_json(&view)?;
            } else {
                print_show(&view)?;
            }
        }
        SkillCmd::Tool(a) => {
            let id = sandbox_id(&a.id)?;
            let (tool, args) = tool_args(&a, json_out)?;
            let r = skills.call(&id, tool.as_str(), args).await?;
            return print_result(&r, json_out);
        }
        SkillCmd::Cleanup { id } => {
            let c = skills.cleanup(&sandbox_id(&id)?).await?;
            print_cleanup(&c, json_out)?;
        }
    }
    Ok(0)
}

/// Runs `cmd` against a server (`--url`).
pub async fn run_remote(client: &Client, cmd: SkillCmd, json_out: bool) -> Result<i32> {
    match cmd {
        SkillCmd::Build { file } => {
            let (text, dir) = read_skill(&file)?;
            let skill = warren_skill::parse(&text)?;
            let mut files = Map::new();
            for (path, _) in skill.package_files() {
                let host = dir.join(path);
                let data = std::fs::read(&host)
                    .with_context(|| format!("reading package file {} (relative to the skill file)", host.display()))?;
                files.insert(path.to_owned(), json!(base64::engine::general_purpose::STANDARD.encode(data)));
            }
            let body = json!({ "skill": text, "package_files": files });
            let s: Sandbox =
                client.get_json(Method::POST, client.url(&["v1", "skills"])?, Some(Body::Json(body))).await?;
            print_built(&s, json_out)?;
        }
        SkillCmd::List => {
            let list: Vec<Sandbox> = client.get_json(Method::GET, client.url(&["v1", "skills"])?, None).await?;
            if json_out {
                print_json(&list)?;
            } else {
                print_table(&list)?;
            }
        }
        SkillCmd::Show { id } => {
            let id = sandbox_id(&id)?;
            let s: Sandbox = client.get_json(Method::GET, client.url(&["v1", "skills", id.as_str()])?, None).await?;
            if json_out {
                print_json(&s)?;
            } else {
                print_show(&s)?;
            }
        }
        SkillCmd::Tool(a) => {
            let id = sandbox_id(&a.id)?;
            let (tool, args) = tool_args(&a, json_out)?;
            let url = client.url(&["v1", "skills", id.as_str(), "tools", tool.as_str()])?;
            let r: ToolResult = client.get_json(Method::POST, url, Some(Body::Json(args))).await?;
            return print_result(&r, json_out);
        }
        SkillCmd::Cleanup { id } => {
            let id = sandbox_id(&id)?;
            let c: Cleanup = client.get_json(Method::DELETE, client.url(&["v1", "skills", id.as_str()])?, None).await?;
            print_cleanup(&c, json_out)?;
        }
    }
    Ok(0)
}
