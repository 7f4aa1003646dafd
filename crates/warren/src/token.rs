//! `warren token`: mints a token the server accepts (development mode, or a configured HS256
//! secret), and finds the token the CLI's client mode sends.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use warren_core::config::Config;
use warren_core::UserId;
use warren_server::auth::Authenticator;
use warren_server::dev;

/// `warren token` arguments.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user the token names.
    #[arg(value_parser = crate::parse_user)]
    pub user: UserId,
    /// Grant operator access (every workspace).
    #[arg(long)]
    pub admin: bool,
    /// Lifetime, like 30m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::units::parse_duration)]
    pub ttl: Duration,
}

/// Prints a token for `args.user`.
pub fn run(cfg: &Config, config_file: Option<&Path>, args: TokenArgs) -> Result<i32> {
    let (_, auth) = crate::serve::server_sections(config_file)?;
    let authn = Authenticator::new(&auth, &cfg.state_dir)?;
    let Some(token) = authn.mint(&args.user, args.admin, args.ttl) else {
        bail!(
            "this server verifies tokens from an identity provider (auth.jwks_url or auth.public_key_file): \
             get tokens there; warren token works in development mode or with an HS256 secret"
        );
    };
    println!("{}", token?);
    Ok(0)
}

/// The token the client sends: `$WARREN_TOKEN`, else a short-lived admin token minted from the
/// local development secret (or configured HS256 secret), when this host has one.
pub fn client_token(cfg: &Config, config_file: Option<&Path>) -> Result<String> {
    if let Ok(t) = std::env::var("WARREN_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_owned());
        }
    }
    let hint = "set WARREN_TOKEN to a token the server accepts (on the server host: warren token USER)";
    let (_, auth) = crate::serve::server_sections(config_file)?;
    if auth.is_dev() && !dev::secret_path(&cfg.state_dir).exists() {
        bail!(
            "no token: WARREN_TOKEN is not set and there is no development secret in {} ({hint})",
            cfg.state_dir.display()
        );
    }
    let authn = Authenticator::new(&auth, &cfg.state_dir).with_context(|| format!("finding a local token ({hint})"))?;
    let admin = UserId::new("warren-admin").context("admin id")?;
    match authn.mint(&admin, true, Duration::from_secs(300)) {
        Some(t) => t.map_err(Into::into),
        None => bail!("no token: the server uses an identity provider ({hint})"),
    }
}
