//! The one error type of this crate.

use crate::record::BuildStep;

/// What went wrong with a skill, a sandbox or a tool call.
#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    /// The skill file broke a rule; `field` names where (`limits.memory`, `packages[1]`, ...).
    #[error("skill file: {field}: {message}")]
    Invalid {
        /// Where in the skill file (a front-matter field, or `front matter`).
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The tool exists but the sandbox's skill does not allow it.
    #[error("tool {tool} is not allowed in sandbox {id}: its skill allows {}", allowed_list(.allowed))]
    ToolNotAllowed {
        /// The sandbox.
        id: String,
        /// The tool asked for.
        tool: String,
        /// The tools the skill allows.
        allowed: Vec<String>,
    },
    /// No tool has this name.
    #[error("unknown tool {0:?}: the tools are write_file, read_file, list_files, run_command and run_python")]
    UnknownTool(String),
    /// A tool call's arguments are malformed.
    #[error("invalid arguments for {tool}: {message}")]
    InvalidArgs {
        /// The tool.
        tool: String,
        /// What is wrong.
        message: String,
    },
    /// No sandbox has this id.
    #[error("skill sandbox {0} not found")]
    NotFound(String),
    /// Building the sandbox failed; nothing of it was left behind.
    #[error("building skill {name:?} failed at step {step}: {message}")]
    Build {
        /// The skill.
        name: String,
        /// The step that failed (`venv`, `pip_install`, ...).
        step: String,
        /// What failed, with the command's last output lines when there are any.
        message: String,
        /// The steps run, the failed one last.
        log: Vec<BuildStep>,
    },
    /// The owner has as many sandboxes as allowed.
    #[error("{0}")]
    TooMany(String),
    /// The engine or the host failed.
    #[error(transparent)]
    Engine(#[from] warren_core::Error),
}

fn allowed_list(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "no tools".to_owned()
    } else {
        allowed.join(", ")
    }
}

impl SkillError {
    /// A stable machine-readable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            SkillError::Invalid { .. } => "invalid_skill",
            SkillError::ToolNotAllowed { .. } => "tool_not_allowed",
            SkillError::UnknownTool(_) => "unknown_tool",
            SkillError::InvalidArgs { .. } => "invalid_request",
            SkillError::NotFound(_) => "not_found",
            SkillError::Build { .. } => "build_failed",
            SkillError::TooMany(_) => "too_many_sandboxes",
            SkillError::Engine(e) => e.code(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SkillError::Invalid { field: field.into(), message: message.into() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = SkillError> = std::result::Result<T, E>;
