//! `warren serve`: the control plane on the engine, and the configuration file's `[server]` and
//! `[auth]` tables (which every command tolerates; only the server and the token commands read
//! them).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use warren_core::config::Config;
use warren_core::UserId;
use warren_engine::{Engine, EngineOptions};
use warren_server::auth::AuthMode;
use warren_server::config::{apply_env, parse_listen, AuthConfig, ServerConfig};
use warren_server::Server;

/// `warren serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT, :PORT (all interfaces) or PORT (loopback). Overrides
    /// $WARREN_LISTEN and server.listen (default 127.0.0.1:7878).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Lifetime of the development tokens printed at start.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::units::parse_duration)]
    pub token_ttl: Duration,
}

/// The engine's part of a configuration file (every top-level key but the `[server]` and
/// `[auth]` tables), and whether it sets `state_dir`.
pub fn parse_core_config(text: &str) -> Result<(Config, bool)> {
    let mut table: toml::Table = text.parse()?;
    table.remove("server");
    table.remove("auth");
    let sets_state = table.contains_key("state_dir");
    let cfg: Config = toml::Value::Table(table).try_into()?;
    Ok((cfg, sets_state))
}

/// The `[server]` and `[auth]` tables of the configuration file (defaults without one), then
/// the environment over them.
pub fn server_sections(config_file: Option<&Path>) -> Result<(ServerConfig, AuthConfig)> {
    let (mut server, mut auth) = (ServerConfig::default(), AuthConfig::default());
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let mut table: toml::Table = text.parse().with_context(|| format!("config file {}", path.display()))?;
        if let Some(v) = table.remove("server") {
            server = v.try_into().with_context(|| format!("config file {}: the [server] table", path.display()))?;
        }
        if let Some(v) = table.remove("auth") {
            auth = v.try_into().with_context(|| format!("config file {}: the [auth] table", path.display()))?;
        }
    }
    apply_env(&mut server, &mut auth, |k| std::env::var(k).ok()).context("environment")?;
    Ok((server, auth))
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(cfg: Config, config_file: Option<&Path>, args: ServeArgs) -> Result<i32> {
    let (mut server_cfg, auth_cfg) = server_sections(config_file)?;
    if let Some(l) = args.listen {
        server_cfg.listen = l;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warren-serve")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let engine = Arc::new(Engine::open(cfg, EngineOptions::default()).await?);
        // Idle suspension and daily snapshots (no-ops unless configured in [snapshots]).
        let triggers = engine.clone();
        tokio::spawn(async move { triggers.run_triggers().await });
        // The resource monitor ([monitor] interval_secs; 0 switches it off).
        let monitor = engine.clone();
        tokio::spawn(async move { monitor.run_monitor().await });
        let listen = server_cfg.listen;
        let server = Server::new(engine.clone(), server_cfg, &auth_cfg).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen} (choose another with --listen or WARREN_LISTEN)"))?;
        let addr = listener.local_addr().context("reading the listening address")?;
        banner(&server, &engine, addr, args.token_ttl)?;
        let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        server.serve(listener, shutdown).await.context("serving")?;
        tracing::info!("stopped; workspaces keep running and are adopted again on the next start");
        Ok(0)
    })
}

/// Prints where the server listens and, in development mode, tokens and a curl line.
fn banner(server: &Server, engine: &Engine, addr: SocketAddr, ttl: Duration) -> Result<()> {
    let url = format!("http://{addr}");
    let auth = server.authenticator();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "warren listening on {url} (backend {}, state {})",
        engine.backend_kind(),
        engine.config().state_dir.display()
    )?;
    match auth.mode() {
        AuthMode::Dev => {
            let secret = warren_server::dev::secret_path(&engine.config().state_dir);
            let hours = ttl.as_secs() / 3600;
            let life = if hours > 0 { format!("{hours}h") } else { format!("{}s", ttl.as_secs()) };
            let admin = UserId::new("warren-admin").context("admin id")?;
            let user = UserId::new("u_123").context("user id")?;
            let mint = |u: &UserId, a: bool| auth.mint(u, a, ttl).transpose().map(Option::unwrap_or_default);
            let (admin_token, user_token) = (mint(&admin, true)?, mint(&user, false)?);
            writeln!(
                out,
                "development mode: HS256 tokens signed with {} (configure [auth] for a real identity provider)",
                secret.display()
            )?;
            if !addr.ip().is_loopback() {
                writeln!(out, "WARNING: development mode on a non-loopback address: anyone who gets a token can use it; configure [auth]")?;
            }
            writeln!(out, "admin token ({life}):         {admin_token}")?;
            writeln!(out, "token of user u_123 ({life}): {user_token}")?;
            writeln!(out, "more: warren token USER [--admin] [--ttl 1h]")?;
            writeln!(out, "try:")?;
            writeln!(out, "  export TOKEN={user_token}")?;
            writeln!(out, "  curl -s -X POST {url}/v1/workspaces/me/exec -H \"Authorization: Bearer $TOKEN\" -d '{{\"argv\":[\"id\"]}}'")?;
            writeln!(out, "  curl -s -X POST {url}/snapshot/create -H \"Authorization: Bearer $TOKEN\" -d '{{\"user_id\":\"u_123\"}}'")?;
        }
        mode => writeln!(out, "auth: {mode:?} (algorithms {:?})", auth.algorithms())?,
    }
    let sign_in = if warren_server::terminal::page::dev_login_possible(auth.mode(), addr) {
        "a token, or locally as any user (development mode)"
    } else {
        "a token"
    };
    writeln!(out, "terminal: open {url}/terminal in a browser and sign in with {sign_in}")?;
    writeln!(out, "API: {url}/openapi.json   health: {url}/healthz   metrics: {url}/metrics")?;
    out.flush()?;
    Ok(())
}
