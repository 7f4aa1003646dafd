//! `warren code ...` (owned by the code work).

use anyhow::Result;
use clap::Subcommand;
use warren_engine::Engine;

use crate::client::Client;

/// The `code` subcommands.
#[derive(Debug, Subcommand)]
pub enum CodeCmd {}

/// Runs `cmd` on the local engine.
pub async fn run(_engine: &Engine, cmd: CodeCmd, _json: bool) -> Result<i32> {
    match cmd {}
}

/// Runs `cmd` against a server (`--url`).
pub async fn run_remote(_client: &Client, cmd: CodeCmd, _json: bool) -> Result<i32> {
    match cmd {}
}
