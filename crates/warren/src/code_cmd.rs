//! `warren code ...`: sandboxed coding sessions on a copy of a project (see
//! docs/code-sessions.md), on the local engine or through a server (`--url`).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use warren_code::{
    ChangeKind, Changes, CommitInfo, Diff, LogEntry, Range, SessionId, SessionInfo, Sessions, StartOptions,
    StopOptions, StopReport, SyncOptions, SyncReport,
};
use warren_core::ExitStatus;
use warren_engine::Engine;
use warren_server::code_api::CodeExecResult;

use crate::client::{Body, Client};
use crate::units;

const EXAMPLES: &str = "\
Examples:
  warren code start --path ~/src/app --exclude target
  warren code exec 3fa9c0d1e2b4 -- sh -c 'cargo test 2>&1 | tail'
  warren code changes 3fa9c0d1e2b4
  warren code diff 3fa9c0d1e2b4
  warren code sync 3fa9c0d1e2b4
  warren code stop 3fa9c0d1e2b4

The project is copied (everything but .git) into a new workspace: limits, no network unless
--network. Every `warren code exec` is followed by a commit in a history kept outside the
sandbox; `sync` writes the recorded changes back, refusing when host files changed meanwhile.";

/// The `code` subcommands.
#[derive(Debug, Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum CodeCmd {
    /// Start a session: copy a project into a new sandboxed workspace (the global --backend
    /// picks its backend).
    #[command(after_help = "\
Examples:
  warren code start --path .
  warren --backend ns code start --path ~/src/app --exclude target --exclude node_modules --memory 2G

Symlinks are copied when they stay inside the project; others, FIFOs, sockets and devices are
left out (listed). .git is never copied, tracked or synced.")]
    Start(StartArgs),
    /// List sessions.
    #[command(after_help = "Examples:\n  warren code list\n  warren code list --json")]
    List,
    /// Show a session: its workspace, its commits, whether changes wait to be synced.
    #[command(after_help = "Example:\n  warren code status 3fa9c0d1e2b4")]
    Status {
        /// The session.
        #[arg(value_parser = parse_session)]
        session: SessionId,
    },
    /// Run a command in the session (its output streams), then record the files as a commit.
    #[command(after_help = "\
Examples:
  warren code exec 3fa9c0d1e2b4 -- make test
  warren code exec 3fa9c0d1e2b4 --cwd src -- sh -c 'sed -i s/foo/bar/ main.c'

The exit code is the command's (124 if --timeout killed it).")]
    Exec(CodeExecArgs),
    /// Record the session's files now (changes made outside `warren code exec`).
    #[command(after_help = "Example:\n  warren code commit 3fa9c0d1e2b4 -m 'after the background build'")]
    Commit {
        /// The session.
        #[arg(value_parser = parse_session)]
        session: SessionId,
        /// The commit message.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Files added, modified and deleted, with a diffstat (default: since the last sync).
    #[command(
        after_help = "Examples:\n  warren code changes 3fa9c0d1e2b4\n  warren code changes 3fa9c0d1e2b4 --all --json"
    )]
    Changes(RangeArgs),
    /// The unified diff (default: since the last sync).
    #[command(
        after_help = "Examples:\n  warren code diff 3fa9c0d1e2b4\n  warren code diff 3fa9c0d1e2b4 --all src/main.rs"
    )]
    Diff {
        #[command(flatten)]
        range: RangeArgs,
        /// Only these paths.
        paths: Vec<String>,
    },
    /// The recorded commits, newest first.
    #[command(after_help = "Example:\n  warren code log 3fa9c0d1e2b4 --limit 20")]
    Log {
        /// The session.
        #[arg(value_parser = parse_session)]
        session: SessionId,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Write the recorded changes back to the host project (never touching .git). Refused, with
    /// the list of conflicts, when host files changed since the session started (or the last
    /// sync), unless --force.
    #[command(
        after_help = "Examples:\n  warren code sync 3fa9c0d1e2b4 --dry-run\n  warren code sync 3fa9c0d1e2b4 --force\n  warren code sync 3fa9c0d1e2b4 --max-bytes 4G"
    )]
    Sync {
        /// The session.
        #[arg(value_parser = parse_session)]
        session: SessionId,
        /// Overwrite host files that changed meanwhile.
        #[arg(long)]
        force: bool,
        /// Only show what would be written and the conflicts.
        #[arg(long)]
        dry_run: bool,
        /// The most bytes of file content this sync may write (default 1G); more is refused
        /// before anything is written.
        #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
        max_bytes: Option<u64>,
    },
    /// End a session: destroy its workspace (and its history unless --keep-history). Refused
    /// while changes were never synced, unless --keep-history or --discard.
    #[command(after_help = "Examples:\n  warren code stop 3fa9c0d1e2b4\n  warren code stop 3fa9c0d1e2b4 --discard")]
    Stop {
        /// The session.
        #[arg(value_parser = parse_session)]
        session: SessionId,
        /// Keep the history: changes, diff, log and sync keep working; stop again to remove it.
        #[arg(long)]
        keep_history: bool,
        /// Drop changes never synced.
        #[arg(long)]
        discard: bool,
    },
}

/// `warren code start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The project directory.
    #[arg(long, value_name = "DIR")]
    path: PathBuf,
    /// A name left out at any depth (repeatable), besides .git: never copied, tracked or synced.
    #[arg(long, value_name = "NAME")]
    exclude: Vec<String>,
    #[command(flatten)]
    limits: crate::LimitArgs,
    /// Give the sandbox network access beyond loopback (off by default).
    #[arg(long)]
    network: bool,
    /// The image the sandbox runs, one `warren image import` made (ns and docker backends).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// The user the session is for (with --url; default: the token's user).
    #[arg(long, value_name = "USER")]
    owner: Option<String>,
}

/// `warren code exec`.
#[derive(Debug, Args)]
pub struct CodeExecArgs {
    /// The session.
    #[arg(value_parser = parse_session)]
    session: SessionId,
    #[command(flatten)]
    cmd: crate::CommandArgs,
}

/// Which commits to compare.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// The session.
    #[arg(value_parser = parse_session)]
    session: SessionId,
    /// Everything the session changed (from the base), synced or not.
    #[arg(long)]
    all: bool,
    /// From this commit (see `warren code log`).
    #[arg(long, value_name = "COMMIT")]
    from: Option<String>,
    /// To this commit.
    #[arg(long, value_name = "COMMIT")]
    to: Option<String>,
}

impl RangeArgs {
    fn range(&self) -> Range {
        Range { from: self.from.clone(), to: self.to.clone(), all: self.all }
    }
}

fn parse_session(s: &str) -> Result<SessionId, String> {
    s.parse().map_err(|e: warren_core::Error| e.to_string())
}

/// Runs `cmd` on the local engine.
pub async fn run(engine: &Engine, cmd: CodeCmd, json: bool) -> Result<i32> {
    let s = Sessions::new(engine);
    match cmd {
        CodeCmd::Start(a) => {
            if a.owner.is_some() {
                bail!("--owner names a server user: use it with --url");
            }
            let limits = a.limits.given().then(|| a.limits.over(engine.config().limits.clone()));
            let info = s
                .start(StartOptions {
                    project: a.path,
                    owner: None,
                    backend: None,
                    limits,
                    network: a.network,
                    exclude: a.exclude,
                    image: a.image,
                })
                .await?;
            print_started(&info, json)?;
        }
        CodeCmd::List => print_list(&s.list().await?, json)?,
        CodeCmd::Status { session } => print_status(&s.get(&session).await?, json)?,
        CodeCmd::Exec(a) => return exec_local(&s, a, json).await,
        CodeCmd::Commit { session, message } => print_commit(&s.commit(&session, message.as_deref()).await?, json)?,
        CodeCmd::Changes(r) => print_changes(&s.changes(&r.session, &r.range()).await?, json)?,
        CodeCmd::Diff { range, paths } => print_diff(&s.diff(&range.session, &range.range(), &paths).await?, json)?,
        CodeCmd::Log { session, limit } => print_log(&s.log(&session, limit).await?, json)?,
        CodeCmd::Sync { session, force, dry_run, max_bytes } => {
            print_sync(&s.sync(&session, SyncOptions { force, dry_run, max_bytes }).await?, json)?
        }
        CodeCmd::Stop { session, keep_history, discard } => {
            print_stop(&s.stop(&session, StopOptions { keep_history, discard }).await?, json)?
        }
    }
    Ok(0)
}

/// What `code exec --json` prints: `exec --json`'s fields and the commit.
#[derive(Serialize)]
struct ExecJson {
    #[serde(flatten)]
    exec: crate::ExecJson,
    commit: CommitInfo,
}

fn read_stdin_if_piped() -> Result<Option<Vec<u8>>> {
    if std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf).context("reading stdin")?;
    Ok(Some(buf))
}

async fn exec_local(s: &Sessions<'_>, a: CodeExecArgs, json: bool) -> Result<i32> {
    let req = a.cmd.request();
    if json {
        let mut req = req;
        req.stdin = read_stdin_if_piped()?;
        let out = s.exec(&a.session, req).await?;
        let o = &out.output;
        let exec = crate::ExecJson::of_output(o);
        let code = exec.exit_code();
        crate::print_json(&ExecJson { exec, commit: out.commit.clone() })?;
        return Ok(code);
    }
    let timeout = req.timeout;
    let (mut h, pending) = s.exec_stream(&a.session, req).await?;
    match h.stdin.take() {
        Some(tx) if !std::io::stdin().is_terminal() => crate::forward_stdin(tx),
        _ => {}
    }
    let code = crate::stream(h, timeout, None).await;
    let status = code.as_ref().ok().map(|c| ExitStatus { code: *c, signal: None });
    let commit = pending.finish(status, false).await?;
    note_skipped(&commit);
    code
}

/// Runs `cmd` against a server (`--url`).
pub async fn run_remote(client: &Client, cmd: CodeCmd, json: bool) -> Result<i32> {
    let sessions = |rest: &[&str]| {
        let mut segs = vec!["v1", "code", "sessions"];
        segs.extend_from_slice(rest);
        client.url(&segs)
    };
    let range_url = |r: &RangeArgs, what: &str| -> Result<reqwest::Url> {
        let mut url = sessions(&[r.session.as_str(), what])?;
        {
            let mut q = url.query_pairs_mut();
            if r.all {
                q.append_pair("all", "true");
            }
            if let Some(f) = &r.from {
                q.append_pair("from", f);
            }
            if let Some(t) = &r.to {
                q.append_pair("to", t);
            }
        }
        Ok(url)
    };
    match cmd {
        CodeCmd::Start(a) => {
            let limits = a.limits.patch();
            // The global --backend (or WARREN_BACKEND) picks the session's backend on the server.
            let backend = crate::Cli::try_parse().ok().and_then(|c| c.backend).map(|b| b.as_str().to_owned());
            let path = if a.path.is_absolute() {
                a.path
            } else {
                std::env::current_dir().context("finding the current directory")?.join(&a.path)
            };
            let body = json!({
                "path": path.to_string_lossy(),
                "owner": a.owner,
                "backend": backend,
                "limits": (!limits.is_empty()).then_some(limits),
                "network": a.network,
                "exclude": a.exclude,
                "image": a.image,
            });
            let info: SessionInfo = client.get_json(Method::POST, sessions(&[])?, Some(Body::Json(body))).await?;
            print_started(&info, json)?;
        }
        CodeCmd::List => {
            let list: Vec<SessionInfo> = client.get_json(Method::GET, sessions(&[])?, None).await?;
            print_list(&list, json)?
        }
        CodeCmd::Status { session } => {
            print_status(&client.get_json(Method::GET, sessions(&[session.as_str()])?, None).await?, json)?
        }
        CodeCmd::Exec(a) => {
            let stdin = read_stdin_if_piped()?;
            let body = a.cmd.body(stdin.as_deref());
            let body = serde_json::to_value(&body).context("encoding the request")?;
            let url = sessions(&[a.session.as_str(), "exec"])?;
            let CodeExecResult { result: r, commit } =
                client.get_json(Method::POST, url, Some(Body::Json(body))).await?;
            let commit: CommitInfo = serde_json::from_value(serde_json::to_value(&commit)?)?;
            if json {
                let exec = crate::ExecJson::of_result(&r)?;
                crate::print_json(&ExecJson { exec, commit })?;
            } else {
                let dec =
                    |s: &str| base64::engine::general_purpose::STANDARD.decode(s).context("the server sent bad base64");
                std::io::stdout().write_all(&dec(&r.stdout)?).and_then(|_| std::io::stdout().flush())?;
                std::io::stderr().write_all(&dec(&r.stderr)?)?;
                if r.timed_out {
                    eprintln!("error: the command timed out and was killed");
                }
                note_skipped(&commit);
            }
            return Ok(if r.timed_out { 124 } else { r.exit_code });
        }
        CodeCmd::Commit { session, message } => {
            let body = json!({ "message": message });
            let url = sessions(&[session.as_str(), "commit"])?;
            print_commit(&client.get_json(Method::POST, url, Some(Body::Json(body))).await?, json)?;
        }
        CodeCmd::Changes(r) => {
            print_changes(&client.get_json(Method::GET, range_url(&r, "changes")?, None).await?, json)?
        }
        CodeCmd::Diff { range, paths } => {
            if paths.len() > 1 {
                bail!("with --url, diff takes at most one path");
            }
            let mut url = range_url(&range, "diff")?;
            if let Some(p) = paths.first() {
                url.query_pairs_mut().append_pair("path", p);
            }
            print_diff(&client.get_json(Method::GET, url, None).await?, json)?;
        }
        CodeCmd::Log { session, limit } => {
            let mut url = sessions(&[session.as_str(), "log"])?;
            url.query_pairs_mut().append_pair("limit", &limit.to_string());
            let log: Vec<LogEntry> = client.get_json(Method::GET, url, None).await?;
            print_log(&log, json)?;
        }
        CodeCmd::Sync { session, force, dry_run, max_bytes } => {
            let body = json!({ "force": force, "dry_run": dry_run, "max_bytes": max_bytes });
            let url = sessions(&[session.as_str(), "sync"])?;
            print_sync(&client.get_json(Method::POST, url, Some(Body::Json(body))).await?, json)?;
        }
        CodeCmd::Stop { session, keep_history, discard } => {
            let mut url = sessions(&[session.as_str()])?;
            url.query_pairs_mut()
                .append_pair("keep_history", &keep_history.to_string())
                .append_pair("discard", &discard.to_string());
            print_stop(&client.get_json(Method::DELETE, url, None).await?, json)?;
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Output (the same for local and --url modes)

/// Text from inside a sandbox, safe to print: control characters shown escaped (a file name or
/// a diff must not drive the terminal). `keep_lines` keeps newlines and tabs.
fn clean(s: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out
}

fn short(c: &Option<String>) -> &str {
    c.as_deref().map_or("-", |c| c.get(..12).unwrap_or(c))
}

fn note_skipped(c: &CommitInfo) {
    if c.skipped_count > 0 {
        eprintln!(
            "warren: {} entr{} not recorded (their last recorded version is kept):",
            c.skipped_count,
            if c.skipped_count == 1 { "y" } else { "ies" }
        );
        for s in &c.skipped {
            eprintln!("  {}: {}", clean(&s.path, false), s.reason);
        }
    }
}

fn print_started(i: &SessionInfo, json: bool) -> Result<()> {
    if json {
        return crate::print_json(i);
    }
    let c = &i.copy;
    let n = |k: u64, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
    println!(
        "started code session {} (backend {}, workspace {}): copied {}, {} ({} bytes) from {}",
        i.id,
        i.backend.map_or("-", |b| b.as_str()),
        i.workspace_user,
        n(c.files, "file"),
        n(c.symlinks, "symlink"),
        units::format_size(c.bytes),
        i.project
    );
    if c.skipped_count > 0 {
        println!("left out ({}):", c.skipped_count);
        for s in &c.skipped {
            println!("  {}: {}", clean(&s.path, false), s.reason);
        }
    }
    println!("next: warren code exec {} -- CMD; warren code changes {}; warren code sync {}", i.id, i.id, i.id);
    Ok(())
}

fn print_list(list: &[SessionInfo], json: bool) -> Result<()> {
    if json {
        return crate::print_json(list);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12}  {:<8}  {:<8}  {:<7}  {:<8}  {:<16}  PROJECT",
        "SESSION", "STATUS", "STATE", "BACKEND", "UNSYNCED", "OWNER"
    )?;
    for i in list {
        writeln!(
            out,
            "{:<12}  {:<8}  {:<8}  {:<7}  {:<8}  {:<16}  {}",
            i.id.as_str(),
            i.status.to_string(),
            i.state.map_or("-".to_owned(), |s| s.to_string()),
            i.backend.map_or("-", |b| b.as_str()),
            if i.unsynced { "yes" } else { "no" },
            i.owner.as_ref().map_or("-", |o| o.as_str()),
            i.project
        )?;
    }
    Ok(())
}

fn print_status(i: &SessionInfo, json: bool) -> Result<()> {
    if json {
        return crate::print_json(i);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "session:   {}", i.id)?;
    writeln!(out, "status:    {}", i.status)?;
    writeln!(out, "project:   {}", i.project)?;
    writeln!(
        out,
        "workspace: {} ({}, {})",
        i.workspace_user,
        i.backend.map_or("-", |b| b.as_str()),
        i.state.map_or("none".to_owned(), |s| s.to_string())
    )?;
    writeln!(out, "owner:     {}", i.owner.as_ref().map_or("- (local)", |o| o.as_str()))?;
    writeln!(out, "base:      {}", short(&i.base_commit))?;
    writeln!(out, "synced:    {}", short(&i.synced_commit))?;
    writeln!(out, "head:      {}{}", short(&i.head_commit), if i.unsynced { " (changes not synced yet)" } else { "" })?;
    if !i.exclude.is_empty() {
        writeln!(out, "excluded:  .git, {}", i.exclude.join(", "))?;
    }
    writeln!(out, "created:   {}", i.created_at)?;
    Ok(())
}

fn print_commit(c: &CommitInfo, json: bool) -> Result<()> {
    if json {
        return crate::print_json(c);
    }
    println!("{} {}", short(&Some(c.commit.clone())), if c.changed { "(files changed)" } else { "(no file changed)" });
    note_skipped(c);
    Ok(())
}

fn print_changes(c: &Changes, json: bool) -> Result<()> {
    if json {
        return crate::print_json(c);
    }
    let mut out = std::io::stdout().lock();
    let width = c.files.iter().map(|f| f.path.chars().count()).max().unwrap_or(0).min(60);
    for f in &c.files {
        let k = match f.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Deleted => 'D',
            ChangeKind::TypeChanged => 'T',
        };
        let stat = match (f.lines_added, f.lines_deleted) {
            (Some(a), Some(d)) => format!("+{a} -{d}"),
            _ => "binary".to_owned(),
        };
        writeln!(out, " {k} {:<width$} | {stat}", clean(&f.path, false))?;
    }
    writeln!(
        out,
        "{} file{} changed: {} added, {} modified, {} deleted; +{} -{} lines",
        c.files.len(),
        if c.files.len() == 1 { "" } else { "s" },
        c.added,
        c.modified,
        c.deleted,
        c.lines_added,
        c.lines_deleted
    )?;
    Ok(())
}

fn print_diff(d: &Diff, json: bool) -> Result<()> {
    if json {
        return crate::print_json(d);
    }
    let mut out = std::io::stdout().lock();
    let r = if std::io::stdout().is_terminal() {
        out.write_all(clean(&d.text, true).as_bytes())
    } else {
        out.write_all(d.text.as_bytes())
    };
    match r.and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        r => r.context("writing to stdout")?,
    }
    if d.truncated {
        eprintln!(
            "warren: the diff was cut at {} (see `warren code changes` for the list)",
            units::format_size(warren_code::MAX_DIFF_BYTES as u64)
        );
    }
    Ok(())
}

fn print_log(log: &[LogEntry], json: bool) -> Result<()> {
    if json {
        return crate::print_json(log);
    }
    let mut out = std::io::stdout().lock();
    for e in log {
        let exit = e
            .message
            .lines()
            .find_map(|l| l.strip_prefix("exit: "))
            .map(|c| format!("  [exit {c}]"))
            .unwrap_or_default();
        writeln!(out, "{}  {}  {}{exit}", e.commit.get(..12).unwrap_or(&e.commit), e.time, clean(&e.subject, false))?;
    }
    Ok(())
}

fn print_sync(r: &SyncReport, json: bool) -> Result<()> {
    if json {
        return crate::print_json(r);
    }
    let verb = if r.applied { "" } else { "would be " };
    for p in &r.written {
        println!("  {verb}written: {}", clean(p, false));
    }
    for p in &r.deleted {
        println!("  {verb}deleted: {}", clean(p, false));
    }
    for s in &r.skipped {
        println!("  skipped: {}: {}", clean(&s.path, false), s.reason);
    }
    for c in &r.conflicts {
        let what = if r.applied { "overwritten (--force)" } else { "conflict" };
        println!("  {what}: {}: {}", clean(&c.path, false), c.reason);
    }
    if r.from == r.to {
        println!("nothing to sync: the host has every recorded change");
    } else if r.applied {
        println!("synced {}: {} written, {} deleted", short(&Some(r.to.clone())), r.written.len(), r.deleted.len());
    } else {
        println!("dry run: nothing was changed");
    }
    Ok(())
}

fn print_stop(r: &StopReport, json: bool) -> Result<()> {
    if json {
        return crate::print_json(r);
    }
    let extra = match (r.history_kept, r.discarded_changes) {
        (true, _) => " (history kept: changes, diff, log and sync still work; stop again to remove it)",
        (false, true) => " (unsynced changes discarded)",
        (false, false) => "",
    };
    println!("stopped code session {}{extra}", r.id);
    Ok(())
}
