//! The API load test: a real `warren serve` (the `warren` binary, started as a child process on a
//! fresh state directory, the ns backend, development-mode HS256 tokens), N workspaces created and
//! started through the API, then M execs through `POST /v1/workspaces/{user}/exec` at a fixed
//! concurrency. Every exec is checked (HTTP 2xx, exit 0, the expected stdout); any error makes the
//! run fail. Latency is per request, client side (request sent to response parsed).
//!
//! Each exec authenticates as the workspace's owner with a token of its own (the server checks
//! ownership as in production); creation, start and destroy use an admin token. The server's
//! per-user rate limit is off for the run: it exists to refuse exactly this kind of flood, and the
//! test measures what the server can do, not the limiter.
//!
//! Everything is cleaned up at the end, after an error and on SIGINT/SIGTERM: the workspaces are
//! destroyed through the API, the server is stopped, any init still recorded in the state
//! directory is killed and its cgroup removed, and the state directory is removed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use warren_core::config::Config;
use warren_core::{Backend, BackendKind, UserId, WorkspaceId, WorkspaceSpec};
use warren_server::auth::Authenticator;
use warren_server::config::AuthConfig;

use crate::stats::{summarize, Summary};

/// Host uids of the load test's workspaces: `UID_BASE ..` (apart from every test's range).
pub const UID_BASE: u32 = 3_400_000;
/// How long the server may take to listen.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Longest one request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// Errors kept verbatim in the report.
const ERROR_EXAMPLES: usize = 10;
/// A phase stops after this many errors (a dead server fails every request at once).
const MAX_ERRORS: usize = 100;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadArgs {
    /// Workspaces to create and start.
    pub workspaces: usize,
    /// Execs in all, spread round-robin over the workspaces.
    pub execs: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The `warren` binary (default: beside this one).
    pub warren: Option<PathBuf>,
}

/// Latency summaries of one phase and its errors.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// Requests made.
    pub requests: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Latency of the requests that succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Summary>,
    /// Wall time of the whole phase, seconds.
    pub wall_secs: f64,
    /// Successful requests per second of wall time.
    pub per_sec: f64,
}

/// The outcome of a load test.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Workspaces asked for.
    pub workspaces: usize,
    /// Execs asked for.
    pub execs: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The server binary.
    pub warren_binary: String,
    /// `debug` or `release` (from the binary's target directory), else `unknown`.
    pub build: String,
    /// The backend the server reported.
    pub backend: String,
    /// Creating the workspaces (`POST /v1/workspaces`).
    pub create: Phase,
    /// Starting them (`POST /v1/workspaces/{user}/start`).
    pub start: Phase,
    /// The execs (`POST /v1/workspaces/{user}/exec`, `true` or `echo`).
    pub exec: Phase,
    /// Destroying them (`DELETE /v1/workspaces/{user}`).
    pub destroy: Phase,
    /// Errors of every phase.
    pub errors: usize,
    /// The first few errors, verbatim.
    pub error_examples: Vec<String>,
    /// Stopped early by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// Workspaces the final sweep still found and destroyed (should be 0).
    pub left_behind: usize,
    /// Whole run, server start to cleanup, seconds.
    pub total_secs: f64,
    /// Exec latencies, for the runner's table.
    #[serde(skip)]
    pub exec_samples: Vec<Duration>,
}

impl LoadReport {
    /// No error, nothing interrupted, nothing left behind, every exec made.
    pub fn passed(&self) -> bool {
        self.errors == 0 && !self.interrupted && self.left_behind == 0 && self.exec.requests == self.execs
    }

    /// Why the run did not pass, or `None` when it did.
    pub fn failure(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        let mut why = Vec::new();
        if self.errors > 0 {
            why.push(format!(
                "{} errors (first: {})",
                self.errors,
                self.error_examples.first().map_or("-", String::as_str)
            ));
        }
        if self.interrupted {
            why.push("interrupted".into());
        }
        if self.left_behind > 0 {
            why.push(format!("{} workspaces left running", self.left_behind));
        }
        if self.exec.requests != self.execs {
            why.push(format!("{} of {} execs made", self.exec.requests, self.execs));
        }
        Some(why.join("; "))
    }

    /// A short markdown summary.
    pub fn markdown(&self) -> String {
        let lat = |p: &Phase| match &p.latency {
            Some(s) => format!(
                "{} | {} | {} | {}",
                crate::stats::fmt_ms(s.p50_ms),
                crate::stats::fmt_ms(s.p99_ms),
                crate::stats::fmt_ms(s.max_ms),
                s.n
            ),
            None => "- | - | - | 0".into(),
        };
        let mut s = format!(
            "API load test: {} workspaces, {} execs at concurrency {} through `warren serve` ({} build, {} backend): \
             **{}** ({} errors)\n\n",
            self.workspaces,
            self.execs,
            self.concurrency,
            self.build,
            self.backend,
            if self.passed() { "PASS" } else { "FAIL" },
            self.errors
        );
        s.push_str("| phase | p50 | p99 | max | n | errors | per second | wall |\n");
        s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (name, p) in [
            ("create (POST /v1/workspaces)", &self.create),
            ("start (POST .../start)", &self.start),
            ("exec (POST .../exec)", &self.exec),
            ("destroy (DELETE .../{user})", &self.destroy),
        ] {
            s.push_str(&format!("| {name} | {} | {} | {:.1} | {:.2} s |\n", lat(p), p.errors, p.per_sec, p.wall_secs));
        }
        for e in &self.error_examples {
            s.push_str(&format!("\n- error: {e}"));
        }
        if self.interrupted {
            s.push_str("\n- interrupted (SIGINT/SIGTERM): the numbers cover what ran");
        }
        if self.left_behind > 0 {
            s.push_str(&format!(
                "\n- {} workspaces were still running at the end; the sweep stopped them",
                self.left_behind
            ));
        }
        s.push_str(&format!("\n\nTotal {:.1} s (server start to cleanup).\n", self.total_secs));
        s
    }
}

/// The `warren` binary: `--warren`, else `warren` beside this binary (or one directory up, for
/// binaries in `target/*/deps`).
pub fn find_warren(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok(p.to_owned()) } else { Err(format!("--warren {}: no such file", p.display())) };
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding the running binary: {e}"))?;
    exe.parent()
        .into_iter()
        .chain(exe.parent().and_then(Path::parent))
        .map(|d| d.join("warren"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no warren binary beside {} (build it: cargo build -p warren, with --release for the release bench; \
                 or give --warren PATH)",
                exe.display()
            )
        })
}

/// `debug` or `release` from a binary's path in a cargo target directory.
fn build_of(p: &Path) -> String {
    let comps: Vec<String> = p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    for w in comps.windows(2).rev() {
        if w[0] == "target" || w[0].starts_with("target") {
            return w[1].clone();
        }
    }
    "unknown".into()
}

/// The running server, killed on drop if [`Serve::stop`] was not called.
struct Serve {
    child: Child,
    addr: SocketAddr,
    backend: String,
    log: PathBuf,
}

/// `warren listening on http://ADDR (backend KIND, state DIR)` -> (ADDR, KIND).
pub fn parse_banner(line: &str) -> Option<(SocketAddr, String)> {
    let rest = line.strip_prefix("warren listening on http://")?;
    let (addr, rest) = rest.split_once(' ')?;
    let backend = rest.strip_prefix("(backend ")?.split([',', ')']).next()?.to_owned();
    Some((addr.parse().ok()?, backend))
}

impl Serve {
    fn start(bin: &Path, config: &Path, log: &Path) -> Result<Self, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0", "--token-ttl", "2h"])
            .env_remove("WARREN_STATE_DIR")
            .env_remove("WARREN_BACKEND")
            .env_remove("WARREN_CONFIG")
            .env_remove("WARREN_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group: a ctrl-c in the terminal reaches the bench, which then
            // destroys the workspaces through the server before stopping it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {} serve: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout of warren serve")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(v) = parse_banner(&line) {
                        let _ = tx.send(v);
                        sent = true;
                    }
                }
            }
        });
        let mut s =
            Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), backend: String::new(), log: log.into() };
        match rx.recv_timeout(START_LIMIT) {
            Ok((addr, backend)) => {
                s.addr = addr;
                s.backend = backend;
                Ok(s)
            }
            Err(_) => {
                let tail = s.log_tail();
                Err(format!("warren serve did not start listening within {} s: {tail}", START_LIMIT.as_secs()))
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// SIGTERM, then SIGKILL after 20 s.
    fn stop(&mut self) -> Result<(), String> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return if st.success() { Ok(()) } else { Err(format!("warren serve exited with {st}")) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err("warren serve did not stop within 20 s of SIGTERM; killed it".into())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request's outcome.
type Outcome = (usize, Duration, Result<(), String>);

/// Runs `f(0..n)` with at most `concurrency` in flight (one task per slot), until done, `stop`,
/// or [`MAX_ERRORS`] errors.
async fn drive<F, Fut>(n: usize, concurrency: usize, stop: Arc<AtomicBool>, f: F) -> (Vec<Outcome>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (f, next, stop, errors) = (f.clone(), next.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) || errors.load(Ordering::Relaxed) >= MAX_ERRORS {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                let r = match tokio::time::timeout(REQUEST_LIMIT, f(i)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} s", REQUEST_LIMIT.as_secs())),
                };
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                out.push((i, t.elapsed(), r));
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(v) => all.extend(v),
            Err(e) => all.push((usize::MAX, Duration::ZERO, Err(format!("a client task panicked: {e}")))),
        }
    }
    (all, started.elapsed())
}

/// Summarises a phase; errors go to `examples`.
fn phase(outcomes: &[Outcome], wall: Duration, examples: &mut Vec<String>, what: &str) -> (Phase, Vec<Duration>) {
    let mut ok = Vec::with_capacity(outcomes.len());
    let mut errors = 0;
    for (i, took, r) in outcomes {
        match r {
            Ok(()) => ok.push(*took),
            Err(e) => {
                errors += 1;
                if examples.len() < ERROR_EXAMPLES {
                    examples.push(format!("{what} #{i}: {e}"));
                }
            }
        }
    }
    let wall_secs = wall.as_secs_f64();
    let p = Phase {
        requests: outcomes.len(),
        errors,
        latency: summarize(&ok),
        wall_secs: (wall_secs * 1000.0).round() / 1000.0,
        per_sec: if wall_secs > 0.0 { (ok.len() as f64 / wall_secs * 10.0).round() / 10.0 } else { 0.0 },
    };
    (p, ok)
}

/// A JSON request with a bearer token; `Ok(body)` on a 2xx answer.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let mut req = client.request(method.clone(), &url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
    if !status.is_success() {
        let mut t = text;
        t.truncate(300);
        return Err(format!("{method} {url}: HTTP {status}: {t}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{method} {url}: the answer is not JSON ({e}): {text:.200}"))
}

/// The user of workspace `i`.
pub fn user_name(i: usize) -> String {
    format!("load_{i:05}")
}

/// Exec `i`'s argv and expected stdout: `true` (nothing) and `echo load-i`, alternately.
pub fn exec_of(i: usize) -> (Vec<String>, String) {
    if i.is_multiple_of(2) {
        (vec!["true".into()], String::new())
    } else {
        (vec!["echo".into(), format!("load-{i}")], format!("load-{i}\n"))
    }
}

/// Checks an exec's answer.
pub fn check_exec(body: &serde_json::Value, expected: &str) -> Result<(), String> {
    let code = body.get("exit_code").and_then(serde_json::Value::as_i64);
    let stdout = body.get("stdout").and_then(serde_json::Value::as_str);
    if code != Some(0) || stdout != Some(expected) {
        let mut b = body.to_string();
        b.truncate(300);
        return Err(format!("expected exit 0 and stdout {expected:?}, got {b}"));
    }
    Ok(())
}

/// The scratch directory of a run: the state directory and the server's log below it.
fn scratch() -> Result<tempfile::TempDir, String> {
    let t = tempfile::Builder::new()
        .prefix("wbl-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))?;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("chmod {}: {e}", t.path().display()))?;
    Ok(t)
}

/// The engine's configuration of the run.
fn engine_config(state: &Path, workspaces: usize) -> Config {
    Config {
        state_dir: state.to_owned(),
        backend: BackendKind::Ns,
        uid_base: UID_BASE,
        uid_count: u32::try_from(workspaces.saturating_mul(2).max(1000)).unwrap_or(u32::MAX),
        ..Config::default()
    }
}

fn toml_str(p: &Path) -> String {
    serde_json::Value::String(p.to_string_lossy().into_owned()).to_string()
}

/// Runs the load test. `Err` when it could not run at all (no binary, the server did not start);
/// request errors are counted in the report.
pub async fn run(args: &LoadArgs, stop: Arc<AtomicBool>) -> Result<LoadReport, String> {
    let started = Instant::now();
    let bin = find_warren(args.warren.as_deref())?;
    let dir = scratch()?;
    let state = dir.path().join("s");
    std::fs::create_dir_all(&state).map_err(|e| format!("creating {}: {e}", state.display()))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("chmod {}: {e}", state.display()))?;
    let cfg = engine_config(&state, args.workspaces);
    let config = dir.path().join("warren.toml");
    let text = format!(
        "state_dir = {}\nbackend = \"ns\"\nuid_base = {}\nuid_count = {}\n\n[server]\nrate_limit_rps = 0\nshutdown_grace_secs = 5\n",
        toml_str(&state),
        cfg.uid_base,
        cfg.uid_count
    );
    std::fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    // The development secret, made before the server starts (it reads the same file).
    let auth = Authenticator::new(&AuthConfig::default(), &state).map_err(|e| format!("development secret: {e}"))?;
    let ttl = Duration::from_secs(4 * 3600);
    let mint = |u: &UserId, admin: bool| -> Result<String, String> {
        auth.mint(u, admin, ttl).ok_or("development mode cannot mint tokens")?.map_err(|e| e.to_string())
    };
    let admin = mint(&UserId::new("warren-admin").map_err(|e| e.to_string())?, true)?;
    let mut tokens = Vec::with_capacity(args.workspaces);
    for i in 0..args.workspaces {
        let u = UserId::new(user_name(i)).map_err(|e| e.to_string())?;
        tokens.push(mint(&u, false)?);
    }
    let tokens = Arc::new(tokens);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    eprintln!("warren-bench load: starting {} serve on {}", bin.display(), state.display());
    // From here on nothing returns early: the cleanup below always runs.
    let mut serve = Serve::start(&bin, &config, &dir.path().join("serve.log"))?;
    let base = format!("http://{}", serve.addr);

    let mut examples = Vec::new();
    let w = args.workspaces;
    let c = args.concurrency;

    eprintln!("warren-bench load: creating {w} workspaces (concurrency {c})");
    let (out, wall) = {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        drive(w, c, stop.clone(), move |i| {
            let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
            async move {
                let body = serde_json::json!({ "user": user_name(i) });
                call(&client, reqwest::Method::POST, format!("{base}/v1/workspaces"), &admin, Some(body))
                    .await
                    .map(drop)
            }
        })
        .await
    };
    let (create, _) = phase(&out, wall, &mut examples, "create");
    let created: Vec<usize> = out.iter().filter(|o| o.2.is_ok()).map(|o| o.0).collect();

    eprintln!("warren-bench load: starting them");
    let (out, wall) = {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        let created = Arc::new(created.clone());
        drive(created.len(), c, stop.clone(), move |k| {
            let (client, base, admin, i) = (client.clone(), base.clone(), admin.clone(), created[k]);
            async move {
                let url = format!("{base}/v1/workspaces/{}/start", user_name(i));
                call(&client, reqwest::Method::POST, url, &admin, None).await.map(drop)
            }
        })
        .await
    };
    let (start, _) = phase(&out, wall, &mut examples, "start");

    let (exec, exec_samples) = if created.len() == w && start.errors == 0 && w > 0 {
        eprintln!("warren-bench load: {} execs (concurrency {c})", args.execs);
        let (out, wall) = {
            let (client, base, tokens) = (client.clone(), base.clone(), tokens.clone());
            drive(args.execs, c, stop.clone(), move |i| {
                let (client, base, tokens) = (client.clone(), base.clone(), tokens.clone());
                async move {
                    let ws = i % w;
                    let (argv, expected) = exec_of(i);
                    let body = serde_json::json!({ "argv": argv, "timeout_ms": 60_000 });
                    let url = format!("{base}/v1/workspaces/{}/exec", user_name(ws));
                    let answer = call(&client, reqwest::Method::POST, url, &tokens[ws], Some(body)).await?;
                    check_exec(&answer, &expected)
                }
            })
            .await
        };
        phase(&out, wall, &mut examples, "exec")
    } else {
        if w > 0 {
            examples.push("exec: skipped: not every workspace was created and started".into());
        }
        (Phase::default(), vec![])
    };

    eprintln!("warren-bench load: destroying the workspaces");
    let (out, wall) = {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        let created = Arc::new(created);
        // Not stoppable: this is the cleanup.
        drive(created.len(), c, Arc::new(AtomicBool::new(false)), move |k| {
            let (client, base, admin, i) = (client.clone(), base.clone(), admin.clone(), created[k]);
            async move {
                let url = format!("{base}/v1/workspaces/{}", user_name(i));
                call(&client, reqwest::Method::DELETE, url, &admin, None).await.map(drop)
            }
        })
        .await
    };
    let (destroy, _) = phase(&out, wall, &mut examples, "destroy");
    drop(client);
    let server_error = match serve.stop() {
        Ok(()) => 0,
        Err(e) => {
            examples.push(format!("server: {e}"));
            1
        }
    };
    let (left_behind, sweep_error) = match sweep(&state).await {
        Ok(n) => (n, 0),
        Err(e) => {
            examples.push(format!("sweep: {e}"));
            (0, 1)
        }
    };
    remove_scratch(dir);

    let errors = create.errors + start.errors + exec.errors + destroy.errors + server_error + sweep_error;
    Ok(LoadReport {
        workspaces: args.workspaces,
        execs: args.execs,
        concurrency: args.concurrency,
        warren_binary: bin.display().to_string(),
        build: build_of(&bin),
        backend: serve.backend.clone(),
        create,
        start,
        exec,
        destroy,
        errors,
        error_examples: examples,
        interrupted: stop.load(Ordering::Relaxed),
        left_behind,
        total_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        exec_samples,
    })
}

/// Stops every workspace init still recorded under `state` (the server is stopped by now and the
/// API destroyed every workspace it created, so there should be none): kills it and removes its
/// cgroup, as the ns backend's stop does. Works on the host's records only (no store, so a
/// `warren` binary of another build than this one cannot get in the way). Returns how many there
/// were.
async fn sweep(state: &Path) -> Result<usize, String> {
    let run = state.join("run/ns");
    let entries = match std::fs::read_dir(&run) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("listing {}: {e}", run.display())),
    };
    let ids: Vec<WorkspaceId> =
        entries.flatten().filter_map(|e| WorkspaceId::new(e.file_name().to_string_lossy().into_owned()).ok()).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let b = crate::density::backend(state)?;
    for id in &ids {
        let spec = WorkspaceSpec { id: id.clone(), ..crate::warren::spec("sweep", UID_BASE)? };
        if let Err(e) = b.stop(&spec).await {
            eprintln!("warren-bench load: stopping the leftover workspace {id}: {e}");
        }
    }
    Ok(ids.len())
}

/// Removes the scratch directory unless a mount is left below it.
pub fn remove_scratch(dir: tempfile::TempDir) {
    let leaked = crate::mounts_below(dir.path());
    if leaked.is_empty() {
        let _ = dir.close();
    } else {
        let kept = dir.keep();
        eprintln!(
            "warren-bench: NOT removing {}: mounts are left below it ({}); unmount them and remove it by hand",
            kept.display(),
            leaked.join(", ")
        );
    }
}

/// Sets `stop` on the first SIGINT or SIGTERM (the run then cleans up and ends); a second one
/// ends the process at once.
pub fn stop_on_signals(stop: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if stop.swap(true, Ordering::Relaxed) {
                eprintln!("warren-bench: second signal: exiting without finishing the cleanup");
                std::process::exit(130);
            }
            eprintln!("warren-bench: stopping; cleaning up (signal again to exit at once)");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_is_parsed() {
        let (addr, backend) =
            parse_banner("warren listening on http://127.0.0.1:40123 (backend ns, state /tmp/x/s)").expect("parses");
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 40123)));
        assert_eq!(backend, "ns");
        assert!(parse_banner("development mode: ...").is_none());
        assert!(parse_banner("warren listening on http://nonsense (backend ns, state /)").is_none());
    }

    #[test]
    fn build_profile_from_path() {
        assert_eq!(build_of(Path::new("/w/target/release/warren")), "release");
        assert_eq!(build_of(Path::new("/w/target/debug/warren")), "debug");
        assert_eq!(build_of(Path::new("/usr/bin/warren")), "unknown");
    }

    #[test]
    fn execs_are_checked() {
        let (argv, want) = exec_of(3);
        assert_eq!((argv, want.as_str()), (vec!["echo".to_owned(), "load-3".to_owned()], "load-3\n"));
        assert_eq!(exec_of(4), (vec!["true".to_owned()], String::new()));
        assert!(check_exec(&serde_json::json!({"exit_code": 0, "stdout": "load-3\n"}), "load-3\n").is_ok());
        let e = check_exec(&serde_json::json!({"exit_code": 1, "stdout": ""}), "").expect_err("exit 1");
        assert!(e.contains("exit_code"), "{e}");
        assert!(check_exec(&serde_json::json!({"exit_code": 0, "stdout": "x"}), "").is_err());
        assert!(check_exec(&serde_json::json!({"error": {"code": "x"}}), "").is_err());
        assert!(UserId::new(user_name(199)).is_ok());
    }

    #[tokio::test]
    async fn drive_keeps_to_its_concurrency_and_reports_errors() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (f, p) = (in_flight.clone(), peak.clone());
        let (out, _) = drive(50, 4, Arc::new(AtomicBool::new(false)), move |i| {
            let (f, p) = (f.clone(), p.clone());
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                if i == 7 {
                    Err("seven".to_owned())
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(out.len(), 50);
        assert!(peak.load(Ordering::SeqCst) <= 4);
        let mut ex = Vec::new();
        let (p, ok) = phase(&out, Duration::from_secs(1), &mut ex, "exec");
        assert_eq!((p.requests, p.errors, ok.len()), (50, 1, 49));
        assert_eq!(ex, vec!["exec #7: seven".to_owned()]);
        let stop = Arc::new(AtomicBool::new(true));
        let (out, _) = drive(50, 4, stop, |_| async { Ok(()) }).await;
        assert!(out.is_empty(), "a set stop flag starts nothing");
        let (out, _) = drive(100_000, 4, Arc::new(AtomicBool::new(false)), |_| async { Err("down".to_owned()) }).await;
        assert!(
            out.len() >= MAX_ERRORS && out.len() < MAX_ERRORS + 4,
            "stops after {MAX_ERRORS} errors: {}",
            out.len()
        );
    }
}
