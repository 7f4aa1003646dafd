//! The CLI as a client of `warren serve` (`--url` / `WARREN_URL`): the same commands and
//! output as the local mode, over the REST API. Without `--url` the CLI uses the engine directly.
//!
//! Differences: `image` and `snapshot export`/`import` are not available (they touch this
//! host's files); `shell` speaks the server's terminal WebSocket ([`crate::shell_remote`]) and
//! runs the server's login shell (no `--cwd`, `--env` or command); `exec` sends stdin whole
//! (read to its end first) and without `--timeout` gets the server's `exec_timeout_secs`;
//! signals are not forwarded (interrupting the client closes the stream, which kills the
//! command).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use warren_core::config::Config;
use warren_core::fs::DirEntry;
use warren_core::{Limits, UserId, WorkspaceId, WorkspacePath};
use warren_engine::{Timestamp, WorkspaceInfo};
use warren_server::api::{EventBody, ExecEventBody, ExecResult, FileEntry, LimitsBody, Workspace, WriteResult};
use warren_server::error::ErrorBody;

use crate::{
    created_line, print_entries, print_json, print_status, print_workspace_table, state_line, Cmd, ExecArgs, ExecJson,
    WorkspaceCmd,
};

/// A connection to `warren serve`.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

/// Runs `cmd` against the server at `url`.
pub fn run(url: &str, cfg: &Config, config_file: Option<&Path>, cmd: Cmd, json: bool) -> Result<i32> {
    let base = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL (like http://127.0.0.1:7878)"))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        bail!("--url {url:?} must be an http:// or https:// URL");
    }
    let token = crate::token::client_token(cfg, config_file)?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("warren-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")?;
    let client = Client { http, base, token };
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(client.dispatch(cmd, json))
}

impl Client {
    /// The server's address (`--url`).
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// The token this client sends.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().map_err(|()| anyhow!("--url cannot take a path"))?;
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        Ok(u)
    }

    fn ws(&self, user: &UserId, rest: &[&str]) -> Result<Url> {
        let mut segs = vec!["v1", "workspaces", user.as_str()];
        segs.extend_from_slice(rest);
        self.url(&segs)
    }

    fn files_url(&self, user: &UserId, path: &WorkspacePath) -> Result<Url> {
        let parts: Vec<String> = path.as_path().iter().map(|c| c.to_string_lossy().into_owned()).collect();
        let mut segs = vec!["files"];
        segs.extend(parts.iter().map(String::as_str));
        self.ws(user, &segs)
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the server's message.
    pub(crate) async fn send(&self, method: Method, url: Url, body: Option<Body>) -> Result<reqwest::Response> {
        let shown = format!("{method} {}", url.path());
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        rb = match body {
            Some(Body::Json(v)) => rb.json(&v),
            Some(Body::Bytes(b)) => rb.header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(b),
            None => rb,
        };
        let resp = rb.send().await.map_err(|e| {
            let base = self.base.as_str().trim_end_matches('/');
            anyhow!("cannot reach the warren server at {base} ({shown}): {e}; is `warren serve` running there?")
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) if status == StatusCode::UNAUTHORIZED => {
                bail!(
                    "the server refused the token: {} (set WARREN_TOKEN; on the server host: warren token USER)",
                    e.error.message
                )
            }
            Ok(e) => bail!("{}", e.error.message),
            Err(_) => bail!("{shown}: HTTP {status}: {}", text.trim()),
        }
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Body>,
    ) -> Result<T> {
        let resp = self.send(method, url, body).await?;
        resp.json::<T>().await.context("reading the server's answer")
    }

    async fn dispatch(&self, cmd: Cmd, json_out: bool) -> Result<i32> {
        match cmd {
            Cmd::Workspace(w) => self.workspace(w, json_out).await,
            Cmd::Image(_) => bail!("warren image talks to the docker daemon of this host: run it without --url"),
            Cmd::Stats(a) => crate::stats_cmd::stats_remote(self, a, json_out).await,
            Cmd::Policy(a) => crate::stats_cmd::policy_remote(self, a, json_out).await,
            Cmd::Code(c) => crate::code_cmd::run_remote(self, c, json_out).await,
            Cmd::Skill(c) => crate::skill_cmd::run_remote(self, c, json_out).await,
            Cmd::Snapshot(c) => crate::snapshot_cmd::run_remote(self, c, json_out).await,
            Cmd::Exec(a) => self.exec(a, json_out).await,
            Cmd::Shell(a) => crate::shell_remote::shell(self, a).await,
            Cmd::Ls { user, path } => {
                let path = WorkspacePath::new(path.unwrap_or_default())?;
                let mut url = self.ws(&user, &["files"])?;
                url.query_pairs_mut().append_pair("path", &path.as_path().to_string_lossy());
                let list: Vec<FileEntry> = self.get_json(Method::GET, url, None).await?;
                let mut entries: Vec<DirEntry> = list.into_iter().map(DirEntry::from).collect();
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                if json_out {
                    print_json(&entries)?;
                } else {
                    print_entries(&entries)?;
                }
                Ok(0)
            }
            Cmd::Cat { user, path } => {
                let path = WorkspacePath::new(path)?;
                let mut resp = self.send(Method::GET, self.files_url(&user, &path)?, None).await?;
                let mut out = std::io::stdout().lock();
                while let Some(chunk) = resp.chunk().await.context("reading the file from the server")? {
                    out.write_all(&chunk).context("writing to stdout")?;
                }
                out.flush().context("writing to stdout")?;
                Ok(0)
            }
            Cmd::Put { user, path, from, mode } => {
                let path = WorkspacePath::new(path)?;
                let data = crate::put_input(from.as_deref())?;
                let mut url = self.files_url(&user, &path)?;
                url.query_pairs_mut().append_pair("mode", &format!("{mode:o}"));
                let r: WriteResult = self.get_json(Method::PUT, url, Some(Body::Bytes(data))).await?;
                if json_out {
                    print_json(&json!({ "path": r.path, "bytes": r.bytes, "mode": r.mode }))?;
                }
                Ok(0)
            }
            Cmd::Rm { user, path, recursive } => {
                let path = WorkspacePath::new(path)?;
                let mut url = self.files_url(&user, &path)?;
                if recursive {
                    url.query_pairs_mut().append_pair("recursive", "true");
                }
                self.send(Method::DELETE, url, None).await?;
                Ok(0)
            }
            Cmd::Events { user, limit } => {
                let mut url = self.url(&["v1", "events"])?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(u) = &user {
                        q.append_pair("user", u.as_str());
                    }
                    q.append_pair("limit", &limit.to_string());
                }
                let events: Vec<EventBody> = self.get_json(Method::GET, url, None).await?;
                if json_out {
                    print_json(&events)?;
                } else {
                    let mut out = std::io::stdout().lock();
                    for e in events {
                        let who = e.user.unwrap_or_else(|| "-".to_owned());
                        writeln!(out, "{}  {who:<20} {:<14} {}", e.at, e.kind, e.detail)?;
                    }
                }
                Ok(0)
            }
            other => bail!("{} is not available with --url", command_name(&other)),
        }
    }

    async fn workspace(&self, cmd: WorkspaceCmd, json_out: bool) -> Result<i32> {
        match cmd {
            WorkspaceCmd::Create(a) => {
                let body = json!({
                    "user": a.user.as_str(), "limits": a.limits.patch(), "network": a.network(), "image": a.image,
                });
                let w: Workspace =
                    self.get_json(Method::POST, self.url(&["v1", "workspaces"])?, Some(Body::Json(body))).await?;
                created_line(&to_info(w)?, json_out)?;
            }
            WorkspaceCmd::Start { user } => {
                let w: Workspace = self.get_json(Method::POST, self.ws(&user, &["start"])?, None).await?;
                state_line(&to_info(w)?, json_out)?;
            }
            WorkspaceCmd::Stop { user } => {
                let w: Workspace = self.get_json(Method::POST, self.ws(&user, &["stop"])?, None).await?;
                state_line(&to_info(w)?, json_out)?;
            }
            WorkspaceCmd::Status { user } => {
                let info = to_info(self.get_json(Method::GET, self.ws(&user, &[])?, None).await?)?;
                if json_out {
                    print_json(&info)?;
                } else {
                    print_status(&info)?;
                }
            }
            WorkspaceCmd::Destroy { user } => {
                self.send(Method::DELETE, self.ws(&user, &[])?, None).await?;
                if json_out {
                    print_json(&json!({ "destroyed": user }))?;
                } else {
                    println!("destroyed the workspace of {user}");
                }
            }
            WorkspaceCmd::List => {
                let list: Vec<Workspace> = self.get_json(Method::GET, self.url(&["v1", "workspaces"])?, None).await?;
                let list = list.into_iter().map(to_info).collect::<Result<Vec<_>>>()?;
                if json_out {
                    print_json(&list)?;
                } else {
                    print_workspace_table(&list)?;
                }
            }
        }
        Ok(0)
    }

    async fn exec(&self, a: ExecArgs, json_out: bool) -> Result<i32> {
        let stdin = if std::io::stdin().is_terminal() {
            None
        } else {
            let mut buf = Vec::new();
            std::io::stdin().lock().read_to_end(&mut buf).context("reading stdin")?;
            Some(buf)
        };
        let timeout = a.cmd.timeout;
        let body = a.cmd.body(stdin.as_deref());
        let body = serde_json::to_value(&body).context("encoding the request")?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).context("the server sent bad base64");
        if json_out {
            let r: ExecResult =
                self.get_json(Method::POST, self.ws(&a.user, &["exec"])?, Some(Body::Json(body))).await?;
            let out = ExecJson::of_result(&r)?;
            print_json(&out)?;
            return Ok(out.exit_code());
        }
        let mut resp = self.send(Method::POST, self.ws(&a.user, &["exec", "stream"])?, Some(Body::Json(body))).await?;
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = resp.chunk().await.context("reading the command's output from the server")?;
            let Some(chunk) = chunk else {
                bail!("the server's stream ended without the command's exit status");
            };
            pending.extend_from_slice(&chunk);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let ev: ExecEventBody = serde_json::from_slice(&line).context("the server sent a bad event")?;
                match ev {
                    ExecEventBody::Stdout { data } => {
                        if let Err(e) = stdout.write_all(&b64(&data)?).and_then(|()| stdout.flush()) {
                            if e.kind() == std::io::ErrorKind::BrokenPipe {
                                return Ok(141);
                            }
                            return Err(anyhow!(e).context("writing to stdout"));
                        }
                    }
                    ExecEventBody::Stderr { data } => {
                        let _ = stderr.write_all(&b64(&data)?).and_then(|()| stderr.flush());
                    }
                    ExecEventBody::Exit { exit_code, timed_out, .. } => {
                        if timed_out {
                            let t = timeout.map_or_else(String::new, |t| format!(" after {t:?}"));
                            eprintln!("error: the command timed out{t} and was killed");
                            return Ok(124);
                        }
                        return Ok(exit_code);
                    }
                    ExecEventBody::Error { error } => bail!("{}", error.message),
                }
            }
        }
    }
}

/// A request body.
#[derive(Debug)]
pub(crate) enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

fn command_name(cmd: &Cmd) -> String {
    let dbg = format!("{cmd:?}");
    dbg.split(['(', ' ', '{']).next().unwrap_or("this command").to_ascii_lowercase()
}

fn to_info(w: Workspace) -> Result<WorkspaceInfo> {
    let LimitsBody { memory_bytes, cpu_millis, pids, disk_bytes, nofile } = w.limits;
    Ok(WorkspaceInfo {
        user: UserId::new(w.user)?,
        workspace_id: WorkspaceId::new(w.workspace_id)?,
        username: w.username,
        uid: w.uid,
        backend: w.backend.into(),
        state: w.state.into(),
        limits: Limits { memory_bytes, cpu_millis, pids, disk_bytes, nofile },
        network: w.network,
        image: w.image,
        created_at: parse_timestamp(&w.created_at)
            .ok_or_else(|| anyhow!("the server sent a bad timestamp {:?}", w.created_at))?,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as [`Timestamp`] prints it.
fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp::from_millis((((days * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ms in [0i64, 1, 951_782_400_000, 1_767_225_600_123, 4_102_444_799_999] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(parse_timestamp(&t.to_string()), Some(t), "{t}");
        }
        assert_eq!(parse_timestamp("2026-01-01 00:00:00"), None);
    }
}
