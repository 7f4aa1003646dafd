//! `warren`: isolated, persistent workspaces per user, from the command line.

mod client;
mod code_cmd;
mod image_cmd;
mod serve;
mod shell_remote;
mod skill_cmd;
mod snapshot_cmd;
mod stats_cmd;
mod term;
mod token;
mod units;

use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};
use warren_core::config::Config;
use warren_core::fs::{DirEntry, FileKind};
use warren_core::{BackendKind, ExecControl, ExecEvent, ExecRequest, Limits, UserId, WorkspacePath};
use warren_engine::{CreateOptions, Engine, EngineOptions, Timestamp, WorkspaceInfo};

use units::Limit;

const EXAMPLES: &str = "\
Examples:
  warren workspace create u_123 --memory 512M --cpus 1.5
  warren exec u_123 -- sh -c 'echo hi > f; id'
  warren cat u_123 f
  warren shell u_123
  warren workspace list --json
  warren snapshot create u_123 snap_001
  warren --backend dir --state-dir /tmp/warren workspace status u_123

State directory: --state-dir, else $WARREN_STATE_DIR, else state_dir in the --config file, else
/var/lib/warren as root and $XDG_DATA_HOME/warren (~/.local/share/warren) otherwise.
Logs go to stderr: -v, -vv, -vvv, or a filter in $WARREN_LOG (like WARREN_LOG=warren_engine=debug).";

/// Isolated, persistent workspaces, one per user: create them, run commands in them, move files
/// in and out.
#[derive(Debug, Parser)]
#[command(name = "warren", version, after_help = EXAMPLES, propagate_version = true)]
struct Cli {
    /// Where workspaces and warren's state live.
    #[arg(long, global = true, env = "WARREN_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Backend for new workspaces: auto (ns if this host can run it, else docker if a daemon answers, else dir), ns, dir, docker or pool.
    #[arg(long, global = true, env = "WARREN_BACKEND", value_name = "KIND", value_parser = parse_backend)]
    backend: Option<BackendKind>,
    /// A TOML file of settings (state_dir, backend, network, uid_base, uid_count and a [limits] table).
    #[arg(long, global = true, env = "WARREN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Talk to a warren server (like http://127.0.0.1:7878) instead of using the local engine;
    /// the token is $WARREN_TOKEN, or an admin token made from this host's development secret.
    #[arg(long, global = true, env = "WARREN_URL", value_name = "URL")]
    url: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server: the REST API on 127.0.0.1:7878 (development tokens printed at start).
    #[command(after_help = "\
Examples:
  warren serve
  warren serve --listen 0.0.0.0:7878 --config /etc/warren.toml
  WARREN_JWKS_URL=https://example.eu.auth0.com/.well-known/jwks.json WARREN_JWT_AUDIENCE=warren warren serve

Settings: the [server] and [auth] tables of the --config file, then WARREN_* variables (see the
README). Without a key source (jwks_url, public_key_file, secret) the server runs in development
mode with an HS256 secret in {state}/dev-secret.")]
    Serve(serve::ServeArgs),
    /// Print a token the server accepts (development mode or an HS256 secret).
    #[command(
        after_help = "Examples:\n  warren token u_123\n  warren token ops --admin --ttl 8h\n  export WARREN_TOKEN=$(warren token u_123)"
    )]
    Token(token::TokenArgs),
    /// Print the API's OpenAPI document (what docs/openapi.json holds).
    #[command(after_help = "Example:\n  cargo run -p warren -- openapi > docs/openapi.json")]
    Openapi,
    /// Create, start, stop, inspect and destroy workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Take, restore, list, delete, pin, export and import snapshots of workspaces.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCmd),
    /// Run a command in a user's workspace (starting it if it is stopped).
    #[command(after_help = "\
Examples:
  warren exec u_123 -- sh -c 'echo hi > f; id'
  warren exec u_123 --cwd src --env RUST_LOG=debug --timeout 5m -- make test
  echo 'print(1+1)' | warren exec u_123 -- python3 -

The exit code is the command's (128 + the signal number if a signal killed it; 124 if --timeout
killed it). Standard input is passed on when it is not a terminal. Output streams as it comes.")]
    Exec(ExecArgs),
    /// Open an interactive shell (a terminal) in a user's workspace.
    #[command(after_help = "\
Examples:
  warren shell u_123
  warren shell u_123 --cwd src
  warren shell u_123 -- python3

Needs a terminal. The local terminal is in raw mode while the shell runs and is restored after.")]
    Shell(ShellArgs),
    /// List a directory of a workspace.
    #[command(after_help = "Examples:\n  warren ls u_123\n  warren ls u_123 src --json")]
    Ls {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
        /// Directory, relative to the workspace's home (default: the home).
        path: Option<String>,
    },
    /// Print a file of a workspace.
    #[command(after_help = "Examples:\n  warren cat u_123 notes.txt\n  warren cat u_123 out.tar > out.tar")]
    Cat {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
        /// File, relative to the workspace's home.
        path: String,
    },
    /// Write a file into a workspace, from stdin or a local file (parent directories are created).
    #[command(after_help = "\
Examples:
  echo hello | warren put u_123 notes.txt
  warren put u_123 bin/run.sh --from ./run.sh --mode 755")]
    Put {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
        /// File, relative to the workspace's home.
        path: String,
        /// Read the content from this local file instead of stdin.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Permission bits, octal.
        #[arg(long, default_value = "644", value_parser = units::parse_mode)]
        mode: u32,
    },
    /// Delete a file or directory of a workspace.
    #[command(after_help = "Examples:\n  warren rm u_123 notes.txt\n  warren rm u_123 build -r")]
    Rm {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
        /// File or directory, relative to the workspace's home.
        path: String,
        /// Delete a directory with everything in it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Images for the docker and pool backends, without a registry.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Resource use of workspaces against their limits (cpu %, memory, pids, disk).
    #[command(after_help = "\
Examples:
  warren stats
  warren stats u_123 --json

CPU is percent of one core over half a second. A percentage after a limit is the use of that
limit; OVER names the resources above the monitor policy's threshold (see `warren policy`).")]
    Stats(stats_cmd::StatsArgs),
    /// Show or set a workspace's resource-monitor policy (what happens over a threshold).
    #[command(after_help = "\
Examples:
  warren policy u_123
  warren policy u_123 --action stop --grace 30 --memory 90 --disk 100
  warren policy u_123 --cpu 0          # stop watching CPU
  warren policy u_123 --reset          # back to the configured [monitor.policy]

Thresholds are percent of the workspace's own limits. `warren serve` samples every
[monitor] interval_secs (default 10) and acts once a threshold stayed exceeded for --grace
seconds: warn records an event, stop stops the workspace, kill restarts it empty.")]
    Policy(stats_cmd::PolicyArgs),
    /// Sandboxed coding sessions on a copy of a project, with every change tracked outside the
    /// sandbox and synced back safely.
    #[command(subcommand)]
    Code(code_cmd::CodeCmd),
    /// Sandboxes built from skill files, and their tools.
    #[command(subcommand)]
    Skill(skill_cmd::SkillCmd),
    /// Show the audit trail (the last events, of one user or all).
    #[command(after_help = "Examples:\n  warren events\n  warren events u_123 --limit 20 --json")]
    Events {
        /// Only this user's events.
        #[arg(value_parser = parse_user)]
        user: Option<UserId>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum WorkspaceCmd {
    /// Create a user's workspace (stopped; `start` it or just `exec` in it).
    #[command(after_help = "\
Examples:
  warren workspace create u_123
  warren workspace create u_123 --memory 1G --cpus 2 --pids 512 --network

Limits not given take the configured defaults (memory 512M, cpus 1, pids 256, disk 2G);
'unlimited' switches one off. The user keeps the same uid even after destroy and create.")]
    Create(CreateArgs),
    /// Start a user's workspace.
    #[command(after_help = "Example:\n  warren workspace start u_123")]
    Start {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
    },
    /// Stop a user's workspace, killing every process in it (files stay).
    #[command(after_help = "Example:\n  warren workspace stop u_123")]
    Stop {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
    },
    /// Show a user's workspace and its state on the host.
    #[command(after_help = "Examples:\n  warren workspace status u_123\n  warren workspace status u_123 --json")]
    Status {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
    },
    /// Delete a user's workspace and all its files.
    #[command(after_help = "Example:\n  warren workspace destroy u_123")]
    Destroy {
        /// The user.
        #[arg(value_parser = parse_user)]
        user: UserId,
    },
    /// List all workspaces.
    #[command(after_help = "Examples:\n  warren workspace list\n  warren workspace list --json")]
    List,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The user (1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit).
    #[arg(value_parser = parse_user)]
    user: UserId,
    #[command(flatten)]
    limits: LimitArgs,
    /// Give the workspace network access beyond loopback.
    #[arg(long, overrides_with = "no_network")]
    network: bool,
    /// No network beyond loopback (the default unless the config says otherwise).
    #[arg(long)]
    no_network: bool,
    /// The image it runs, one `warren image import` made (ns and docker backends); default:
    /// $CONTAINER_IMAGE, else the host's programs (ns) or warren-workspace:latest (docker).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
}

impl CreateArgs {
    /// `--network` / `--no-network` / neither (the configured default).
    fn network(&self) -> Option<bool> {
        if self.network {
            Some(true)
        } else if self.no_network {
            Some(false)
        } else {
            None
        }
    }
}

/// Prints a new workspace (`warren workspace create`, local or `--url`).
pub(crate) fn created_line(info: &WorkspaceInfo, json: bool) -> Result<()> {
    if json {
        return print_json(info);
    }
    let image = info.image.as_deref().map(|i| format!(", image {i}")).unwrap_or_default();
    println!(
        "created workspace {} for {} (uid {}, backend {}{image}, {})",
        info.workspace_id, info.user, info.uid, info.backend, info.state
    );
    Ok(())
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The user.
    #[arg(value_parser = parse_user)]
    user: UserId,
    #[command(flatten)]
    cmd: CommandArgs,
}

/// Resource limits given on the command line (`warren workspace create`, `warren code start`).
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Memory limit, like 512M or 2G.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size_limit)]
    pub memory: Option<Limit<u64>>,
    /// CPU limit in cores, like 1.5.
    #[arg(long, value_name = "CORES", value_parser = units::parse_cpus)]
    pub cpus: Option<Limit<u32>>,
    /// Most processes and threads.
    #[arg(long, value_name = "N", value_parser = units::parse_count)]
    pub pids: Option<Limit<u32>>,
    /// Disk limit, like 2G.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size_limit)]
    pub disk: Option<Limit<u64>>,
}

impl LimitArgs {
    /// Whether any limit was given.
    pub(crate) fn given(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some() || self.disk.is_some()
    }

    /// `defaults` with the given limits over them.
    pub(crate) fn over(&self, d: Limits) -> Limits {
        Limits {
            memory_bytes: self.memory.map_or(d.memory_bytes, |l| l.0),
            cpu_millis: self.cpus.map_or(d.cpu_millis, |l| l.0),
            pids: self.pids.map_or(d.pids, |l| l.0),
            disk_bytes: self.disk.map_or(d.disk_bytes, |l| l.0),
            nofile: d.nofile,
        }
    }

    /// The given limits as the API's `limits` patch (`null`: unlimited; left out: the default).
    pub(crate) fn patch(&self) -> serde_json::Map<String, serde_json::Value> {
        let num = |v: Option<u64>| v.map_or(serde_json::Value::Null, serde_json::Value::from);
        let mut m = serde_json::Map::new();
        let fields = [
            ("memory_bytes", self.memory.map(|l| l.0)),
            ("cpu_millis", self.cpus.map(|l| l.0.map(u64::from))),
            ("pids", self.pids.map(|l| l.0.map(u64::from))),
            ("disk_bytes", self.disk.map(|l| l.0)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(k.into(), num(v));
            }
        }
        m
    }
}

/// A command to run, as `warren exec` and `warren code exec` take it.
#[derive(Debug, Args)]
pub(crate) struct CommandArgs {
    /// Working directory, relative to the workspace's home (the project's root in a session).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = units::parse_env)]
    pub env: Vec<(String, String)>,
    /// Kill the command after this long (like 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub timeout: Option<Duration>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

impl CommandArgs {
    /// The engine's request (no stdin yet).
    pub(crate) fn request(self) -> ExecRequest {
        ExecRequest { argv: self.argv, env: self.env, cwd: self.cwd, stdin: None, timeout: self.timeout, tty: None }
    }

    /// The API's request body, with `stdin` (base64) and base64 output.
    pub(crate) fn body(self, stdin: Option<&[u8]>) -> warren_server::api::ExecBody {
        use base64::Engine as _;
        warren_server::api::ExecBody {
            argv: self.argv,
            env: self.env.into_iter().collect(),
            cwd: self.cwd,
            stdin: None,
            stdin_base64: stdin.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            timeout_ms: self.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            encoding: warren_server::api::Encoding::Base64,
        }
    }
}

#[derive(Debug, Args)]
struct ShellArgs {
    /// The user.
    #[arg(value_parser = parse_user)]
    user: UserId,
    /// Working directory, relative to the workspace's home.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = units::parse_env)]
    env: Vec<(String, String)>,
    /// Program to run instead of a login shell (after `--`).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    argv: Vec<String>,
}

fn parse_user(s: &str) -> Result<UserId, String> {
    UserId::new(s).map_err(|e| e.to_string())
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse().map_err(|e: warren_core::Error| e.to_string())
}

fn main() {
    // The namespace helper re-executes this binary: it must not see clap, logging or tokio.
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(warren_backend_ns::HELPER_ARG)) {
        warren_backend_ns::helper_main(std::env::args_os().skip(2).collect());
    }
    let cli = Cli::parse();
    // The server logs what it does at info level unless told otherwise.
    init_logging(if matches!(cli.cmd, Cmd::Serve(_)) { cli.verbose.max(1) } else { cli.verbose });
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<i32> {
    if matches!(cli.cmd, Cmd::Openapi) {
        print!("{}", warren_server::openapi_json());
        return Ok(0);
    }
    let cfg = load_config(&cli)?;
    match cli.cmd {
        Cmd::Serve(a) => serve::run(cfg, cli.config.as_deref(), a),
        Cmd::Token(a) => token::run(&cfg, cli.config.as_deref(), a),
        cmd => match &cli.url {
            Some(url) => client::run(url, &cfg, cli.config.as_deref(), cmd, cli.json),
            None => run_local(cfg, cmd, cli.json),
        },
    }
}

fn run_local(cfg: Config, cmd: Cmd, json: bool) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Cmd::Image(c) = cmd {
        return rt.block_on(image_cmd::run(c, &cfg.state_dir));
    }
    rt.block_on(async move {
        let engine = Engine::open(cfg, EngineOptions::default()).await?;
        dispatch(&engine, cmd, json).await
    })
}

/// The configuration: defaults, then the `--config` file, then `--state-dir` and `--backend`
/// (or their environment variables).
fn load_config(cli: &Cli) -> Result<Config> {
    let (mut cfg, file_sets_state) = match &cli.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            serve::parse_core_config(&text).with_context(|| format!("config file {} is not valid", path.display()))?
        }
        None => (Config::default(), false),
    };
    if let Some(dir) = &cli.state_dir {
        cfg.state_dir = dir.clone();
    } else if !file_sets_state {
        cfg.state_dir = default_state_dir()?;
    }
    // The seed's pooled mode (USE_CONTAINERS, MAX_CONTAINERS, USERS_PER_CONTAINER, from the
    // environment or the [server] table) decides where new workspaces go for every command.
    let (server, _) = serve::server_sections(cli.config.as_deref())?;
    if server.use_containers {
        cfg.pool.enabled = true;
    }
    if let Some(n) = server.max_containers {
        cfg.pool.max_containers = n;
    }
    if let Some(n) = server.users_per_container {
        cfg.pool.users_per_container = n;
    }
    if let Some(i) = server.container_image {
        cfg.image = Some(i);
    }
    if let Some(i) = &cfg.image {
        warren_core::config::check_image_name(i).context("image (CONTAINER_IMAGE)")?;
    }
    if let Some(b) = cli.backend {
        cfg.backend = b;
    }
    if cfg.state_dir.is_relative() {
        let cwd = std::env::current_dir().context("finding the current directory")?;
        cfg.state_dir = cwd.join(&cfg.state_dir);
    }
    Ok(cfg)
}

fn default_state_dir() -> Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/warren"));
    }
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = abs(std::env::var_os("XDG_DATA_HOME")) {
        return Ok(xdg.join("warren"));
    }
    if let Some(home) = abs(std::env::var_os("HOME")) {
        return Ok(home.join(".local/share/warren"));
    }
    bail!("cannot pick a state directory (no $XDG_DATA_HOME or $HOME): give --state-dir or set WARREN_STATE_DIR")
}

async fn dispatch(engine: &Engine, cmd: Cmd, json: bool) -> Result<i32> {
    match cmd {
        Cmd::Serve(_) | Cmd::Token(_) | Cmd::Openapi | Cmd::Image(_) => {
            bail!("this command does not use the local engine")
        }
        Cmd::Workspace(w) => workspace(engine, w, json).await,
        Cmd::Snapshot(s) => snapshot_cmd::run(engine, s, json).await,
        Cmd::Stats(a) => stats_cmd::stats(engine, a, json).await,
        Cmd::Policy(a) => stats_cmd::policy(engine, a, json).await,
        Cmd::Code(c) => code_cmd::run(engine, c, json).await,
        Cmd::Skill(c) => skill_cmd::run(engine, c, json).await,
        Cmd::Exec(a) => exec(engine, a, json).await,
        Cmd::Shell(a) => shell(engine, a).await,
        Cmd::Ls { user, path } => {
            let path = WorkspacePath::new(path.unwrap_or_default())?;
            let mut entries = engine.list_files(&user, &path).await?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                print_json(&entries)?;
            } else {
                print_entries(&entries)?;
            }
            Ok(0)
        }
        Cmd::Cat { user, path } => {
            let data = engine.read_file(&user, &WorkspacePath::new(path)?).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data).and_then(|_| out.flush()).context("writing to stdout")?;
            Ok(0)
        }
        Cmd::Put { user, path, from, mode } => {
            let path = WorkspacePath::new(path)?;
            let data = put_input(from.as_deref())?;
            let n = data.len();
            engine.write_file(&user, &path, data, mode).await?;
            if json {
                print_json(&serde_json::json!({ "path": path.to_string(), "bytes": n, "mode": format!("{mode:o}") }))?;
            }
            Ok(0)
        }
        Cmd::Rm { user, path, recursive } => {
            engine.delete_file(&user, &WorkspacePath::new(path)?, recursive).await?;
            Ok(0)
        }
        Cmd::Events { user, limit } => {
            let events = engine.events(user.as_ref(), limit).await?;
            if json {
                print_json(&events)?;
            } else {
                let mut out = std::io::stdout().lock();
                for e in events {
                    let who = e.user.as_ref().map_or("-".to_owned(), ToString::to_string);
                    writeln!(out, "{}  {who:<20} {:<14} {}", e.at, e.kind, e.detail)?;
                }
            }
            Ok(0)
        }
    }
}

async fn workspace(engine: &Engine, cmd: WorkspaceCmd, json: bool) -> Result<i32> {
    match cmd {
        WorkspaceCmd::Create(a) => {
            let limits = a.limits.over(engine.config().limits.clone());
            let opts =
                CreateOptions { limits: Some(limits), network: a.network(), image: a.image, ..Default::default() };
            created_line(&engine.create(&a.user, opts).await?, json)?;
        }
        WorkspaceCmd::Start { user } => state_line(&engine.start(&user).await?, json)?,
        WorkspaceCmd::Stop { user } => state_line(&engine.stop(&user).await?, json)?,
        WorkspaceCmd::Status { user } => {
            let info = engine.status(&user).await?;
            if json {
                print_json(&info)?;
            } else {
                print_status(&info)?;
            }
        }
        WorkspaceCmd::Destroy { user } => {
            engine.destroy(&user).await?;
            if json {
                print_json(&serde_json::json!({ "destroyed": user }))?;
            } else {
                println!("destroyed the workspace of {user}");
            }
        }
        WorkspaceCmd::List => {
            let list = engine.list().await?;
            if json {
                print_json(&list)?;
            } else {
                print_workspace_table(&list)?;
            }
        }
    }
    Ok(0)
}

fn state_line(info: &WorkspaceInfo, json: bool) -> Result<()> {
    if json {
        print_json(info)
    } else {
        println!("{}: {}", info.user, info.state);
        Ok(())
    }
}

fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).context("writing JSON")?;
    writeln!(out)?;
    Ok(())
}

fn limit<T: Copy>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "unlimited".to_owned(), f)
}

fn print_status(i: &WorkspaceInfo) -> Result<()> {
    let l = &i.limits;
    let limits = format!(
        "memory {}, cpus {}, pids {}, disk {}, open files {}",
        limit(l.memory_bytes, units::format_size),
        limit(l.cpu_millis, |m| format!("{}", f64::from(m) / 1000.0)),
        limit(l.pids, |p| p.to_string()),
        limit(l.disk_bytes, units::format_size),
        l.nofile
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "user:      {}", i.user)?;
    writeln!(out, "workspace: {}", i.workspace_id)?;
    writeln!(out, "state:     {}", i.state)?;
    writeln!(out, "backend:   {}", i.backend)?;
    writeln!(out, "uid:       {} (user {})", i.uid, i.username)?;
    writeln!(out, "network:   {}", if i.network { "on" } else { "loopback only" })?;
    writeln!(out, "image:     {}", i.image.as_deref().unwrap_or("the configured default"))?;
    writeln!(out, "limits:    {limits}")?;
    writeln!(out, "created:   {}", i.created_at)?;
    Ok(())
}

fn print_entries(entries: &[DirEntry]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for e in entries {
        let (k, suffix) = match e.kind {
            FileKind::Dir => ('d', "/"),
            FileKind::File => ('-', ""),
            FileKind::Symlink => ('l', "@"),
            FileKind::Other => ('?', ""),
        };
        let when = Timestamp::from_millis(e.mtime.saturating_mul(1000)).to_string();
        let when = when.get(..19).unwrap_or(&when).replace('T', " ");
        writeln!(out, "{k}{:03o} {:>10}  {when}  {}{suffix}", e.mode & 0o777, e.size, e.name)?;
    }
    Ok(())
}

/// What `exec --json` prints (and `code exec --json`, with the commit).
#[derive(Serialize)]
pub(crate) struct ExecJson {
    exit_code: i32,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
    truncated: bool,
    duration_ms: u128,
}

impl ExecJson {
    /// The local engine's output.
    pub(crate) fn of_output(o: &warren_core::ExecOutput) -> Self {
        Self {
            exit_code: o.exit_code,
            signal: o.signal,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            timed_out: o.timed_out,
            truncated: o.truncated,
            duration_ms: o.duration.as_millis(),
        }
    }

    /// The API's result (its output base64 when it says so).
    pub(crate) fn of_result(r: &warren_server::api::ExecResult) -> Result<Self> {
        let text = |s: &str| -> Result<String> {
            Ok(match r.encoding {
                warren_server::api::Encoding::Utf8 => s.to_owned(),
                warren_server::api::Encoding::Base64 => String::from_utf8_lossy(
                    &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s)
                        .context("the server sent bad base64")?,
                )
                .into_owned(),
            })
        };
        Ok(Self {
            exit_code: r.exit_code,
            signal: r.signal,
            stdout: text(&r.stdout)?,
            stderr: text(&r.stderr)?,
            timed_out: r.timed_out,
            truncated: r.truncated,
            duration_ms: u128::from(r.duration_ms),
        })
    }

    /// The CLI's exit code for it: the command's, 124 when it timed out.
    pub(crate) fn exit_code(&self) -> i32 {
        if self.timed_out {
            124
        } else {
            self.exit_code
        }
    }
}

async fn exec(engine: &Engine, a: ExecArgs, json: bool) -> Result<i32> {
    engine.ensure_running(&a.user).await?;
    let req = a.cmd.request();
    req.validate()?;
    let stdin_piped = !std::io::stdin().is_terminal();
    if json {
        // Collected, not streamed: one JSON document at the end.
        let mut req = req;
        if stdin_piped {
            let mut buf = Vec::new();
            std::io::stdin().lock().read_to_end(&mut buf).context("reading stdin")?;
            req.stdin = Some(buf);
        }
        let out = ExecJson::of_output(&engine.exec(&a.user, req).await?);
        print_json(&out)?;
        return Ok(out.exit_code());
    }
    let timeout = req.timeout;
    let mut h = engine.exec_stream(&a.user, req).await?;
    match h.stdin.take() {
        Some(tx) if stdin_piped => forward_stdin(tx),
        _ => {} // dropping the sender closes the command's stdin
    }
    stream(h, timeout, None).await
}

async fn shell(engine: &Engine, a: ShellArgs) -> Result<i32> {
    if !std::io::stdin().is_terminal() {
        bail!("warren shell needs a terminal on stdin; for scripts use `warren exec USER -- CMD`");
    }
    engine.ensure_running(&a.user).await?;
    let argv = if a.argv.is_empty() {
        ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]
            .map(String::from)
            .to_vec()
    } else {
        a.argv
    };
    let size = term::size().unwrap_or(warren_core::TtySize { rows: 24, cols: 80 });
    let req = ExecRequest { argv, env: a.env, cwd: a.cwd, stdin: None, timeout: None, tty: Some(size) };
    let mut h = engine.exec_stream(&a.user, req).await?;
    let raw = term::RawMode::enable()?;
    if let Some(tx) = h.stdin.take() {
        forward_stdin(tx);
    }
    let code = stream(h, None, Some(raw)).await;
    if code.is_ok() {
        // The remote shell's last line may not end with a newline; the local prompt should not
        // be glued to it.
        eprint!("\r");
    }
    code
}

/// What `warren put` writes: the `--from` file, else stdin (which must not be a terminal).
pub(crate) fn put_input(from: Option<&std::path::Path>) -> Result<Vec<u8>> {
    if let Some(f) = from {
        return std::fs::read(f).with_context(|| format!("reading {}", f.display()));
    }
    if std::io::stdin().is_terminal() {
        bail!("put reads the file's content from stdin: pipe it in, or give --from FILE");
    }
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf).context("reading stdin")?;
    Ok(buf)
}

/// Copies stdin to the command on a thread of its own (reads block), in chunks of at most
/// the terminal protocol's input frame (64 KiB), closing the command's stdin at end of file.
pub(crate) fn forward_stdin(tx: tokio::sync::mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; warren_server::terminal::protocol::MAX_INPUT_FRAME];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

/// Streams the command's output to ours until it exits; forwards SIGINT, SIGTERM, SIGHUP and
/// SIGQUIT to it and, with a terminal (`raw` set), window size changes. Returns the exit code.
async fn stream(mut h: warren_core::ExecHandle, timeout: Option<Duration>, raw: Option<term::RawMode>) -> Result<i32> {
    let mut winch = signal(SignalKind::window_change()).context("watching SIGWINCH")?;
    let mut sigs = Vec::new();
    for (kind, num) in [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
        (SignalKind::quit(), 3),
    ] {
        sigs.push((signal(kind).with_context(|| format!("watching signal {num}"))?, num));
    }
    let [(int, _), (term_sig, _), (hup, _), (quit, _)] = &mut sigs[..] else {
        bail!("signal set-up went wrong");
    };
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let status = loop {
        tokio::select! {
            ev = h.events.recv() => match ev {
                Some(ExecEvent::Stdout(b)) => {
                    if let Err(e) = stdout.write_all(&b).and_then(|_| stdout.flush()) {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            // Nobody reads any more (`| head`): stop like a pipeline would.
                            drop(raw);
                            return Ok(141);
                        }
                        return Err(anyhow!(e).context("writing to stdout"));
                    }
                }
                Some(ExecEvent::Stderr(b)) => {
                    let _ = stderr.write_all(&b).and_then(|_| stderr.flush());
                }
                Some(ExecEvent::Exit(st)) => break st,
                None => bail!("the command's output ended without an exit status"),
            },
            _ = &mut deadline, if !timed_out => {
                timed_out = true;
                let _ = h.control.send(ExecControl::Signal(9)).await;
            }
            _ = winch.recv(), if raw.is_some() => {
                if let Some(size) = term::size() {
                    let _ = h.control.send(ExecControl::Resize(size)).await;
                }
            }
            _ = int.recv() => { let _ = h.control.send(ExecControl::Signal(2)).await; }
            _ = term_sig.recv() => { let _ = h.control.send(ExecControl::Signal(15)).await; }
            _ = hup.recv() => { let _ = h.control.send(ExecControl::Signal(1)).await; }
            _ = quit.recv() => { let _ = h.control.send(ExecControl::Signal(3)).await; }
        }
    };
    drop(raw);
    if timed_out {
        let t = timeout.map_or_else(String::new, |t| format!(" after {t:?}"));
        eprintln!("error: the command timed out{t} and was killed");
        return Ok(124);
    }
    Ok(status.code)
}

/// The `workspace list` table (local and `--url` modes print the same).
fn print_workspace_table(list: &[warren_engine::WorkspaceInfo]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<24} {:<30} {:<8} {:<7} {:>10}  CREATED", "USER", "WORKSPACE", "STATE", "BACKEND", "UID")?;
    for i in list {
        writeln!(
            out,
            "{:<24} {:<30} {:<8} {:<7} {:>10}  {}",
            i.user.as_str(),
            i.workspace_id.as_str(),
            i.state.to_string(),
            i.backend.as_str(),
            i.uid,
            i.created_at
        )?;
    }
    Ok(())
}
