//! `warren skill ...` (owned by the skill work).

use anyhow::Result;
use clap::Subcommand;
use warren_engine::Engine;

use crate::client::Client;

/// The `skill` subcommands.
#[derive(Debug, Subcommand)]
pub enum SkillCmd {}

/// Runs `cmd` on the local engine.
pub async fn run(_engine: &Engine, cmd: SkillCmd, _json: bool) -> Result<i32> {
    match cmd {}
}

/// Runs `cmd` against a server (`--url`).
pub async fn run_remote(_client: &Client, cmd: SkillCmd, _json: bool) -> Result<i32> {
    match cmd {}
}
