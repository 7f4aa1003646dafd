//! The skill file: Markdown with a YAML front matter between two `---` lines.
//!
//! ```text
//! ---
//! name: csv-stats
//! description: Summarise CSV files.
//! runtime: python                 # python | node | shell
//! packages: [wheels/csvstats-0.1.0-py3-none-any.whl]
//! files:
//!   - path: data/sample.csv
//!     content: "a,b\n1,2\n"
//! environment: { LC_ALL: C.UTF-8 }
//! limits: { memory: 256M, cpus: 0.5, pids: 64, timeout: 30s }
//! network: false
//! tools: [read_file, write_file, list_files, run_command, run_python]
//! ---
//! # How to use this skill
//! ...
//! ```
//!
//! [`parse`] checks everything before anything is built: unknown fields are refused, names,
//! paths ([`WorkspacePath`]), environment names, limits, tool names and package specs are
//! validated, and every error names its field. docs/skills.md is the reference.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use warren_core::{Limits, WorkspacePath};

use crate::error::{Result, SkillError};

/// Largest skill file accepted, bytes.
pub const MAX_SKILL_BYTES: usize = 1 << 20;
/// Most packages a skill may list.
pub const MAX_PACKAGES: usize = 64;
/// Largest package file, bytes.
pub const MAX_PACKAGE_BYTES: u64 = 64 << 20;
/// Most files a skill may create.
pub const MAX_FILES: usize = 256;
/// Most environment variables a skill may set.
pub const MAX_ENV: usize = 128;
/// Tool-call timeout when the skill gives none.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Build timeout (each build command) when the skill gives none.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest tool-call or build timeout a skill may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Directories of the home that warren itself fills (`.skill`: packages and temporary code;
/// `.venv`: the Python environment). A skill's files and workdir stay out of them.
pub const RESERVED_DIRS: [&str; 2] = [".skill", ".venv"];

/// The language a skill's code runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Python 3: a virtual environment at `~/.venv` with the skill's wheels installed.
    Python,
    /// Node.js: the skill's tarballs installed into `~/node_modules`.
    Node,
    /// A POSIX shell; no packages.
    Shell,
}

impl Runtime {
    /// The skill-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Shell => "shell",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool a sandbox offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolName {
    /// Write a file.
    WriteFile,
    /// Read a file.
    ReadFile,
    /// List a directory.
    ListFiles,
    /// Run a command (argv or a shell command line).
    RunCommand,
    /// Run Python code.
    RunPython,
}

impl ToolName {
    /// Every tool, in documentation order.
    pub const ALL: [ToolName; 5] =
        [ToolName::WriteFile, ToolName::ReadFile, ToolName::ListFiles, ToolName::RunCommand, ToolName::RunPython];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::WriteFile => "write_file",
            ToolName::ReadFile => "read_file",
            ToolName::ListFiles => "list_files",
            ToolName::RunCommand => "run_command",
            ToolName::RunPython => "run_python",
        }
    }

    /// The tools a skill of `runtime` allows when it names none.
    pub fn defaults(runtime: Runtime) -> Vec<ToolName> {
        match runtime {
            Runtime::Python => Self::ALL.to_vec(),
            Runtime::Node | Runtime::Shell => {
                vec![ToolName::WriteFile, ToolName::ReadFile, ToolName::ListFiles, ToolName::RunCommand]
            }
        }
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ToolName {
    type Err = SkillError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| SkillError::UnknownTool(s.to_owned()))
    }
}

/// A package a skill installs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Package {
    /// A local file (a wheel for python, a `.tgz` tarball for node), relative to the skill file.
    File {
        /// The path as the skill gives it.
        path: String,
        /// Its file name (what it is called inside the sandbox).
        file_name: String,
    },
    /// A name with an optional version, from the package index: needs `network: true`.
    Index {
        /// The requirement, like `requests==2.32.3` or `lodash@4`.
        spec: String,
    },
}

/// A file the skill creates in its sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// Where, relative to the skill's workdir.
    pub path: WorkspacePath,
    /// The content (text).
    pub content: String,
    /// Permission bits.
    pub mode: u32,
}

/// One limit: the engine's default, switched off, or a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting<T> {
    /// The configured default.
    Default,
    /// No limit.
    Unlimited,
    /// This value.
    Set(T),
}

impl<T: Copy> Setting<T> {
    fn pick(self, default: Option<T>) -> Option<T> {
        match self {
            Setting::Default => default,
            Setting::Unlimited => None,
            Setting::Set(v) => Some(v),
        }
    }
}

/// A skill's limits, as written (defaults filled in at build time from the engine's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillLimits {
    /// Memory, bytes.
    pub memory_bytes: Setting<u64>,
    /// CPU, thousandths of a core.
    pub cpu_millis: Setting<u32>,
    /// Processes and threads.
    pub pids: Setting<u32>,
    /// Disk, bytes.
    pub disk_bytes: Setting<u64>,
    /// Open files per process (`None`: the default).
    pub nofile: Option<u64>,
    /// Longest a tool call may run.
    pub tool_timeout_ms: u64,
    /// Longest each build command may run.
    pub build_timeout_ms: u64,
}

impl SkillLimits {
    /// The workspace limits: these settings over `defaults`, validated.
    pub fn resolve(&self, defaults: &Limits) -> Result<Limits> {
        let l = Limits {
            memory_bytes: self.memory_bytes.pick(defaults.memory_bytes),
            cpu_millis: self.cpu_millis.pick(defaults.cpu_millis),
            pids: self.pids.pick(defaults.pids),
            disk_bytes: self.disk_bytes.pick(defaults.disk_bytes),
            nofile: self.nofile.unwrap_or(defaults.nofile),
        };
        l.validate().map_err(|e| SkillError::invalid("limits", e.to_string()))?;
        Ok(l)
    }

    /// The tool-call timeout.
    pub fn tool_timeout(&self) -> Duration {
        Duration::from_millis(self.tool_timeout_ms)
    }

    /// The timeout of each build command.
    pub fn build_timeout(&self) -> Duration {
        Duration::from_millis(self.build_timeout_ms)
    }
}

/// A parsed, validated skill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skill {
    /// Its name (`[a-z0-9][a-z0-9._-]*`, at most 64).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The language its code runs in.
    pub runtime: Runtime,
    /// Packages to install.
    pub packages: Vec<Package>,
    /// Files to create.
    pub files: Vec<FileSpec>,
    /// Environment of every tool call.
    pub environment: BTreeMap<String, String>,
    /// Limits.
    pub limits: SkillLimits,
    /// Network beyond loopback.
    pub network: bool,
    /// The tools it allows.
    pub tools: Vec<ToolName>,
    /// Directory the tools work in, relative to the home (the root: the home itself).
    pub workdir: WorkspacePath,
    /// The image the sandbox runs (`None`: the configured default).
    #[serde(default)]
    pub image: Option<String>,
    /// The Markdown body: the skill's instructions.
    pub instructions: String,
}

impl Skill {
    /// The local package files, in order.
    pub fn package_files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.packages.iter().filter_map(|p| match p {
            Package::File { path, file_name } => Some((path.as_str(), file_name.as_str())),
            Package::Index { .. } => None,
        })
    }

    /// Whether `tool` is allowed.
    pub fn allows(&self, tool: ToolName) -> bool {
        self.tools.contains(&tool)
    }
}

// ---------------------------------------------------------------------------------------------
// The raw front matter

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkill {
    name: Option<String>,
    description: Option<String>,
    runtime: Option<String>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    environment: BTreeMap<String, Scalar>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    network: bool,
    tools: Option<Vec<String>>,
    workdir: Option<String>,
    image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    #[serde(default)]
    content: String,
    mode: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Scalar>,
    cpus: Option<Scalar>,
    pids: Option<Scalar>,
    disk: Option<Scalar>,
    open_files: Option<Scalar>,
    timeout: Option<Scalar>,
    build_timeout: Option<Scalar>,
}

/// A YAML scalar taken as its text: `256M`, `268435456`, `0.5` and `true` all arrive as text
/// and are parsed by the field's own rule (so a number and a quoted number mean the same).
#[derive(Debug)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Splits a skill file into its YAML front matter and its Markdown body.
pub fn split_front_matter(text: &str) -> Result<(&str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad = |m: &str| Err(SkillError::invalid("front matter", m));
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n');
    match lines.next() {
        Some(l) if l.trim_end() == "---" => offset += l.len(),
        _ => {
            return bad(
                "a skill file starts with a line '---', then the YAML header (name, description, runtime, ...), \
                        then a line '---', then the Markdown instructions",
            )
        }
    }
    let start = offset;
    for l in lines {
        let t = l.trim_end();
        if t == "---" || t == "..." {
            let yaml = &text[start..offset];
            let body = &text[offset + l.len()..];
            return Ok((yaml, body));
        }
        offset += l.len();
    }
    bad("the YAML header is not closed: end it with a line '---' before the Markdown instructions")
}

/// Parses and validates a skill file.
pub fn parse(text: &str) -> Result<Skill> {
    if text.len() > MAX_SKILL_BYTES {
        return Err(SkillError::invalid(
            "file",
            format!("the skill file is {} bytes, more than the {MAX_SKILL_BYTES}-byte limit", text.len()),
        ));
    }
    let (yaml, body) = split_front_matter(text)?;
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    };
    // One blank line first: the parser's line numbers are then the file's (the header starts on
    // the file's second line).
    let yaml = format!("\n{yaml}");
    let raw: RawSkill = serde_saphyr::from_str_with_options(&yaml, options).map_err(|e| {
        SkillError::invalid("front matter", format!("not a valid skill header: {}", one_line(&e.to_string())))
    })?;
    from_raw(raw, body.trim_start_matches(['\r', '\n']).to_owned())
}

/// The parser's message on one line, without its `error: ` prefix or a source snippet.
fn one_line(s: &str) -> String {
    let first = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let first = first.split(" --> ").next().unwrap_or(first);
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

fn from_raw(raw: RawSkill, instructions: String) -> Result<Skill> {
    let name = raw.name.ok_or_else(|| SkillError::invalid("name", "missing: give the skill a name like csv-stats"))?;
    check_name(&name)?;
    let description = raw
        .description
        .ok_or_else(|| SkillError::invalid("description", "missing: say in a sentence what the skill does"))?;
    let description = description.trim().to_owned();
    if description.is_empty() || description.len() > 2000 {
        return Err(SkillError::invalid("description", "must be 1 to 2000 characters"));
    }
    if description.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(SkillError::invalid("description", "must not contain control characters"));
    }
    let runtime = match raw.runtime.as_deref() {
        Some("python") => Runtime::Python,
        Some("node") => Runtime::Node,
        Some("shell") => Runtime::Shell,
        Some(other) => {
            return Err(SkillError::invalid(
                "runtime",
                format!("{other:?} is not a runtime: use python, node or shell"),
            ))
        }
        None => return Err(SkillError::invalid("runtime", "missing: use python, node or shell")),
    };
    let workdir = match raw.workdir.as_deref() {
        None => WorkspacePath::root(),
        Some(w) => {
            let p = WorkspacePath::new(w).map_err(|e| SkillError::invalid("workdir", e.to_string()))?;
            check_not_reserved("workdir", &p)?;
            p
        }
    };
    if let Some(image) = &raw.image {
        warren_core::config::check_image_name(image).map_err(|e| SkillError::invalid("image", e.to_string()))?;
    }
    let packages = packages(runtime, &raw.packages, raw.network)?;
    let files = files(raw.files, &workdir)?;
    let environment = environment(raw.environment)?;
    let limits = limits(raw.limits)?;
    let tools = match raw.tools {
        None => ToolName::defaults(runtime),
        Some(list) => tools(&list)?,
    };
    Ok(Skill {
        name,
        description,
        runtime,
        packages,
        files,
        environment,
        limits,
        network: raw.network,
        tools,
        workdir,
        image: raw.image,
        instructions,
    })
}

fn check_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SkillError::invalid(
            "name",
            format!("{name:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit"),
        ))
    }
}

fn check_not_reserved(field: &str, p: &WorkspacePath) -> Result<()> {
    let first = p.as_path().iter().next().and_then(|c| c.to_str());
    if let Some(first) = first.filter(|f| RESERVED_DIRS.contains(f)) {
        return Err(SkillError::invalid(
            field,
            format!("{p} is inside {first}/, which warren fills itself (packages, the Python environment); use another directory"),
        ));
    }
    Ok(())
}

fn packages(runtime: Runtime, list: &[String], network: bool) -> Result<Vec<Package>> {
    if list.len() > MAX_PACKAGES {
        return Err(SkillError::invalid("packages", format!("at most {MAX_PACKAGES} packages")));
    }
    if runtime == Runtime::Shell && !list.is_empty() {
        return Err(SkillError::invalid(
            "packages",
            "a shell skill installs no packages: use runtime python (wheels) or node (tarballs), or ship scripts as files",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut names = BTreeSet::new();
    for (i, raw) in list.iter().enumerate() {
        let field = format!("packages[{i}]");
        let spec = raw.trim();
        let is_file = match runtime {
            Runtime::Python => spec.ends_with(".whl") || spec.contains('/'),
            _ => spec.ends_with(".tgz") || spec.ends_with(".tar.gz"),
        };
        let pkg = if is_file {
            let path = WorkspacePath::new(spec).map_err(|e| {
                SkillError::invalid(&field, format!("{e}; package files are given relative to the skill file"))
            })?;
            let file_name = path
                .split()
                .and_then(|(_, n)| n.to_str().map(str::to_owned))
                .ok_or_else(|| SkillError::invalid(&field, format!("{spec:?} names no file")))?;
            match runtime {
                Runtime::Python => check_wheel_name(&field, &file_name)?,
                _ => check_tarball_name(&field, &file_name)?,
            }
            if !names.insert(file_name.clone()) {
                return Err(SkillError::invalid(&field, format!("a second package file named {file_name}")));
            }
            Package::File { path: spec.to_owned(), file_name }
        } else {
            match runtime {
                Runtime::Python => check_pip_spec(&field, spec)?,
                _ => check_npm_spec(&field, spec)?,
            }
            if !network {
                let (what, how) = match runtime {
                    Runtime::Python => ("a wheel file (pip wheel PACKAGE -w wheels/)", "PyPI"),
                    _ => ("a tarball (npm pack PACKAGE)", "the npm registry"),
                };
                return Err(SkillError::invalid(
                    &field,
                    format!(
                        "{spec:?} is a package name: installing it needs {how} or another index, so the skill needs \
                         `network: true`; or list {what} instead"
                    ),
                ));
            }
            Package::Index { spec: spec.to_owned() }
        };
        out.push(pkg);
    }
    Ok(out)
}

fn check_wheel_name(field: &str, name: &str) -> Result<()> {
    let stem = name.strip_suffix(".whl").unwrap_or("");
    let parts: Vec<&str> = stem.split('-').collect();
    let ok = (parts.len() == 5 || parts.len() == 6)
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.+!".contains(&b)))
        && parts[0].as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(SkillError::invalid(
            field,
            format!(
                "{name:?} is not a wheel file name (NAME-VERSION[-BUILD]-PYTHON-ABI-PLATFORM.whl, like \
                 csvstats-0.1.0-py3-none-any.whl); python packages are wheels, built with `pip wheel`"
            ),
        ))
    }
}

fn check_tarball_name(field: &str, name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = b.len() <= 255
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.+@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SkillError::invalid(
            field,
            format!("{name:?}: a package tarball's name is letters, digits, '_', '.', '+', '@', '-' ending in .tgz (as npm pack makes it)"),
        ))
    }
}

fn check_pip_spec(field: &str, spec: &str) -> Result<()> {
    let b = spec.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-[],<>=!~*+ ".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SkillError::invalid(
            field,
            format!(
                "{spec:?} is not a package requirement like requests or requests==2.32.3 (names, extras and version \
                 specifiers only: no URLs, paths, markers or options); a local wheel's path ends in .whl"
            ),
        ))
    }
}

fn check_npm_spec(field: &str, spec: &str) -> Result<()> {
    let b = spec.as_bytes();
    let (name, version) = match spec.strip_prefix('@') {
        Some(rest) => match rest.find('@') {
            Some(i) => (&spec[..=i], Some(&rest[i + 1..])),
            None => (spec, None),
        },
        None => match spec.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        },
    };
    let name_ok = |n: &str| {
        let body = n.strip_prefix('@').map_or(Some(n), |scoped| scoped.split_once('/').map(|(_, p)| p));
        let scope_ok = !n.starts_with('@') || n.matches('/').count() == 1;
        let nb = n.as_bytes();
        scope_ok
            && !n.contains("..")
            && (n.starts_with('@') || !n.contains('/'))
            && body.is_some_and(|p| p.as_bytes().first().is_some_and(|c| c.is_ascii_alphanumeric()))
            && nb.len() <= 214
            && nb.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"@/._-~".contains(c))
    };
    let version_ok = |v: &str| {
        !v.is_empty() && v.len() <= 100 && v.bytes().all(|c| c.is_ascii_alphanumeric() || b".^~<>=*| -+".contains(&c))
    };
    let ok = !b.is_empty() && name_ok(name) && version.is_none_or(version_ok);
    if ok {
        Ok(())
    } else {
        Err(SkillError::invalid(
            field,
            format!(
                "{spec:?} is not an npm package like lodash, lodash@4 or @scope/name@1.2.3 (no URLs, git or file \
                 specs); a local tarball's path ends in .tgz"
            ),
        ))
    }
}

fn files(list: Vec<RawFile>, workdir: &WorkspacePath) -> Result<Vec<FileSpec>> {
    if list.len() > MAX_FILES {
        return Err(SkillError::invalid("files", format!("at most {MAX_FILES} files")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, f) in list.into_iter().enumerate() {
        let field = format!("files[{i}].path");
        let path = WorkspacePath::new(&f.path).map_err(|e| SkillError::invalid(&field, e.to_string()))?;
        if path.is_root() {
            return Err(SkillError::invalid(&field, "names the directory itself: give a file path like src/main.py"));
        }
        check_not_reserved(&field, &workdir.join(&path))?;
        if !seen.insert(path.clone()) {
            return Err(SkillError::invalid(&field, format!("{path} is listed twice")));
        }
        let mode = match f.mode {
            None => 0o644,
            Some(Scalar(m)) => {
                let digits = m.trim();
                u32::from_str_radix(digits, 8).ok().filter(|v| *v <= 0o777 && !digits.is_empty()).ok_or_else(|| {
                    SkillError::invalid(
                        format!("files[{i}].mode"),
                        format!("{m:?} is not octal permission bits like \"644\" or \"755\""),
                    )
                })?
            }
        };
        out.push(FileSpec { path, content: f.content, mode });
    }
    Ok(out)
}

fn environment(raw: BTreeMap<String, Scalar>) -> Result<BTreeMap<String, String>> {
    if raw.len() > MAX_ENV {
        return Err(SkillError::invalid("environment", format!("at most {MAX_ENV} variables")));
    }
    let mut out = BTreeMap::new();
    for (k, Scalar(v)) in raw {
        let field = format!("environment.{k}");
        let b = k.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && !b[0].is_ascii_digit()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !ok {
            return Err(SkillError::invalid(
                field,
                "a variable name is [A-Za-z_][A-Za-z0-9_]*, at most 128 characters",
            ));
        }
        if v.contains('\0') || v.len() > 32 << 10 {
            return Err(SkillError::invalid(field, "a value has no NUL byte and is at most 32 KiB"));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn is_unlimited(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "unlimited" | "none")
}

fn limits(raw: RawLimits) -> Result<SkillLimits> {
    let memory_bytes = match raw.memory {
        None => Setting::Default,
        Some(Scalar(s)) if is_unlimited(&s) => Setting::Unlimited,
        Some(Scalar(s)) => {
            let v = parse_size(&s).map_err(|m| SkillError::invalid("limits.memory", m))?;
            if v < 8 << 20 {
                return Err(SkillError::invalid("limits.memory", format!("{s} is below the 8M minimum")));
            }
            Setting::Set(v)
        }
    };
    let disk_bytes = match raw.disk {
        None => Setting::Default,
        Some(Scalar(s)) if is_unlimited(&s) => Setting::Unlimited,
        Some(Scalar(s)) => Setting::Set(parse_size(&s).map_err(|m| SkillError::invalid("limits.disk", m))?),
    };
    let cpu_millis = match raw.cpus {
        None => Setting::Default,
        Some(Scalar(s)) if is_unlimited(&s) => Setting::Unlimited,
        Some(Scalar(s)) => {
            let m = parse_cpus(&s).ok_or_else(|| {
                SkillError::invalid(
                    "limits.cpus",
                    format!("{s:?} is not a number of cores between 0.01 and 1000, like 0.5 or 2"),
                )
            })?;
            Setting::Set(m)
        }
    };
    let pids = match raw.pids {
        None => Setting::Default,
        Some(Scalar(s)) if is_unlimited(&s) => Setting::Unlimited,
        Some(Scalar(s)) => {
            let n: u32 = s.trim().parse().ok().filter(|n| *n >= 4).ok_or_else(|| {
                SkillError::invalid("limits.pids", format!("{s:?} is not a whole number of at least 4"))
            })?;
            Setting::Set(n)
        }
    };
    let nofile = match raw.open_files {
        None => None,
        Some(Scalar(s)) => {
            Some(s.trim().parse::<u64>().ok().filter(|n| (16..=1 << 20).contains(n)).ok_or_else(|| {
                SkillError::invalid("limits.open_files", format!("{s:?} is not a whole number from 16 to 1048576"))
            })?)
        }
    };
    let timeout = |field: &str, v: Option<Scalar>, default: Duration| -> Result<u64> {
        let d = match v {
            None => default,
            Some(Scalar(s)) => warren_core::config::parse_duration(&s)
                .map_err(|e| SkillError::invalid(field, format!("{s:?} is not a duration like 30s, 5m or 1h ({e})")))?,
        };
        if d.is_zero() || d > MAX_TIMEOUT {
            return Err(SkillError::invalid(field, "must be more than zero and at most 1h"));
        }
        Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Ok(SkillLimits {
        memory_bytes,
        cpu_millis,
        pids,
        disk_bytes,
        nofile,
        tool_timeout_ms: timeout("limits.timeout", raw.timeout, DEFAULT_TOOL_TIMEOUT)?,
        build_timeout_ms: timeout("limits.build_timeout", raw.build_timeout, DEFAULT_BUILD_TIMEOUT)?,
    })
}

fn tools(list: &[String]) -> Result<Vec<ToolName>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let tool: ToolName = t.trim().parse().map_err(|_| {
            SkillError::invalid(
                format!("tools[{i}]"),
                format!(
                    "{t:?} is not a tool: the tools are write_file, read_file, list_files, run_command, run_python"
                ),
            )
        })?;
        if out.contains(&tool) {
            return Err(SkillError::invalid(format!("tools[{i}]"), format!("{tool} is listed twice")));
        }
        out.push(tool);
    }
    Ok(out)
}

/// A size: a number with an optional binary unit K, M, G or T (`KB`, `KiB` too, any case).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let err = || format!("{s:?} is not a size: use a number with an optional unit K, M, G or T, like 512M or 1.5G");
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    let v = decimal(num, mult).ok_or_else(err)?;
    u64::try_from(v).map_err(|_| format!("{s:?} is too large"))
}

/// `1.5` cores as 1500 thousandths; `None` outside 0.01..=1000 cores.
fn parse_cpus(s: &str) -> Option<u32> {
    let m = decimal(s.trim(), 1000)?;
    u32::try_from(m).ok().filter(|m| (10..=1_000_000).contains(m))
}

/// `whole.frac * mult`, rounded down, exactly.
fn decimal(num: &str, mult: u128) -> Option<u128> {
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty())
        || !digits(whole)
        || !digits(frac)
        || (num.contains('.') && frac.is_empty())
    {
        return None;
    }
    let w: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac = &frac[..frac.len().min(18)];
    let f: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    w.checked_mul(mult)?.checked_add(f.checked_mul(mult)? / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "---\nname: t\ndescription: d\nruntime: shell\n---\n# Hi\n";

    fn with(header: &str) -> String {
        format!("---\nname: t\ndescription: d\n{header}\n---\nbody\n")
    }

    fn field_of(text: &str) -> String {
        match parse(text) {
            Err(SkillError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid-skill error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_skill_takes_the_defaults() {
        let s = parse(MINIMAL).expect("valid");
        assert_eq!(s.name, "t");
        assert_eq!(s.runtime, Runtime::Shell);
        assert_eq!(s.tools, ToolName::defaults(Runtime::Shell));
        assert_eq!(s.instructions, "# Hi\n");
        assert!(!s.network);
        assert!(s.workdir.is_root());
        assert_eq!(s.image, None);
        assert_eq!(s.limits.memory_bytes, Setting::Default);
        assert_eq!(s.limits.tool_timeout_ms, 60_000);
        assert_eq!(s.limits.build_timeout_ms, 600_000);
    }

    #[test]
    fn full_header_parses() {
        let text = with(
            "runtime: python\npackages: [wheels/demo_pkg-0.1.0-py3-none-any.whl, 'requests==2.32.3']\nnetwork: true\n\
             files:\n  - path: bin/run.sh\n    content: \"echo hi\\n\"\n    mode: 0755\n  - path: data.txt\n    content: x\n    mode: 600\n\
             environment:\n  PORT: 8080\n  DEBUG: true\n  NAME: demo\n\
             limits: { memory: 256M, cpus: 0.5, pids: 64, disk: 1G, open_files: 512, timeout: 30s, build_timeout: 2m }\n\
             tools: [read_file, run_python]\nworkdir: work\nimage: python:3.12",
        );
        let s = parse(&text).expect("valid");
        assert_eq!(
            s.packages,
            vec![
                Package::File {
                    path: "wheels/demo_pkg-0.1.0-py3-none-any.whl".into(),
                    file_name: "demo_pkg-0.1.0-py3-none-any.whl".into()
                },
                Package::Index { spec: "requests==2.32.3".into() },
            ]
        );
        assert_eq!(s.files[0].mode, 0o755);
        assert_eq!(s.files[1].mode, 0o600);
        assert_eq!(s.files[0].content, "echo hi\n");
        assert_eq!(s.environment["PORT"], "8080");
        assert_eq!(s.environment["DEBUG"], "true");
        assert_eq!(s.limits.memory_bytes, Setting::Set(256 << 20));
        assert_eq!(s.limits.cpu_millis, Setting::Set(500));
        assert_eq!(s.limits.pids, Setting::Set(64));
        assert_eq!(s.limits.disk_bytes, Setting::Set(1 << 30));
        assert_eq!(s.limits.nofile, Some(512));
        assert_eq!(s.limits.tool_timeout_ms, 30_000);
        assert_eq!(s.limits.build_timeout_ms, 120_000);
        assert_eq!(s.tools, vec![ToolName::ReadFile, ToolName::RunPython]);
        assert_eq!(s.workdir, WorkspacePath::new("work").expect("path"));
        assert_eq!(s.image.as_deref(), Some("python:3.12"));
        let l = s.limits.resolve(&Limits::default()).expect("resolves");
        assert_eq!((l.memory_bytes, l.cpu_millis, l.pids, l.nofile), (Some(256 << 20), Some(500), Some(64), 512));
    }

    #[test]
    fn errors_name_their_field() {
        let cases = [
            ("runtime: ruby", "runtime"),
            ("runtime: shell\nunknown: 1", "front matter"),
            ("runtime: shell\nlimits: { memory: 1M }", "limits.memory"),
            ("runtime: shell\nlimits: { memory: lots }", "limits.memory"),
            ("runtime: shell\nlimits: { cpus: 0.001 }", "limits.cpus"),
            ("runtime: shell\nlimits: { pids: 2 }", "limits.pids"),
            ("runtime: shell\nlimits: { timeout: 2h }", "limits.timeout"),
            ("runtime: shell\nlimits: { swap: 1G }", "front matter"),
            ("runtime: shell\ntools: [read_file, rm_rf]", "tools[1]"),
            ("runtime: shell\ntools: [read_file, read_file]", "tools[1]"),
            ("runtime: shell\nfiles: [{ path: ../x }]", "files[0].path"),
            ("runtime: shell\nfiles: [{ path: /etc/passwd }]", "files[0].path"),
            ("runtime: shell\nfiles: [{ path: .venv/bin/python }]", "files[0].path"),
            ("runtime: shell\nfiles: [{ path: a, mode: 999 }]", "files[0].mode"),
            ("runtime: shell\nfiles: [{ path: a }, { path: ./a }]", "files[1].path"),
            ("runtime: shell\nenvironment: { 1BAD: x }", "environment.1BAD"),
            ("runtime: shell\nworkdir: ../up", "workdir"),
            ("runtime: shell\nworkdir: .skill", "workdir"),
            ("runtime: shell\nimage: ../../etc", "image"),
            ("runtime: shell\nimage: 'a b'", "image"),
            ("runtime: shell\npackages: [x.whl]", "packages"),
            ("runtime: python\npackages: [requests]", "packages[0]"),
            ("runtime: python\npackages: [--index-url=http://x/]", "packages[0]"),
            ("runtime: python\nnetwork: true\npackages: ['-r /etc/shadow']", "packages[0]"),
            ("runtime: python\nnetwork: true\npackages: ['pkg @ https://x/p.whl']", "packages[0]"),
            ("runtime: python\npackages: [wheels/not-a-wheel.whl]", "packages[0]"),
            ("runtime: python\npackages: [../w/demo-0.1-py3-none-any.whl]", "packages[0]"),
            ("runtime: python\npackages: [a/demo-0.1-py3-none-any.whl, b/demo-0.1-py3-none-any.whl]", "packages[1]"),
            ("runtime: node\nnetwork: true\npackages: [user/repo]", "packages[0]"),
            ("runtime: node\nnetwork: true\npackages: ['git+https://x/y.git']", "packages[0]"),
            ("runtime: node\nnetwork: true\npackages: ['file:../x']", "packages[0]"),
        ];
        for (header, field) in cases {
            assert_eq!(field_of(&with(header)), field, "{header}");
        }
        assert_eq!(field_of("---\ndescription: d\nruntime: shell\n---\n"), "name");
        assert_eq!(field_of("---\nname: Big Name\ndescription: d\nruntime: shell\n---\n"), "name");
        assert_eq!(field_of("---\nname: t\nruntime: shell\n---\n"), "description");
        assert_eq!(field_of("# no header\n"), "front matter");
        assert_eq!(field_of("---\nname: t\n"), "front matter");
        assert_eq!(field_of("---\nname: [\n---\n"), "front matter");
        assert_eq!(field_of("---\nname: t\nname: u\ndescription: d\nruntime: shell\n---\n"), "front matter");
    }

    #[test]
    fn parser_errors_say_where_in_the_file() {
        let e = parse(&with("runtime: shell\nnetwork: yes")).expect_err("strict booleans").to_string();
        assert!(e.contains("line 5, column 10") && e.contains("true/false"), "{e}");
        let e = parse(&with("runtime: shell\nlimits: { swap: 1G }")).expect_err("unknown").to_string();
        assert!(e.contains("unknown field `swap`") && e.contains("memory, cpus"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn valid_package_specs() {
        let s = parse(&with(
            "runtime: node\nnetwork: true\npackages: [lodash, lodash@4, '@scope/name@^1.2.3', pkg-1.0.0.tgz]",
        ))
        .expect("valid");
        assert_eq!(s.packages.len(), 4);
        assert!(matches!(&s.packages[3], Package::File { file_name, .. } if file_name == "pkg-1.0.0.tgz"));
        let s = parse(&with("runtime: python\nnetwork: true\npackages: ['requests[socks]>=2.0,<3']")).expect("valid");
        assert_eq!(s.packages, vec![Package::Index { spec: "requests[socks]>=2.0,<3".into() }]);
    }

    #[test]
    fn unlimited_limits_and_crlf() {
        let text = "---\r\nname: t\r\ndescription: d\r\nruntime: shell\r\nlimits: { memory: unlimited, pids: none }\r\n---\r\nbody\r\n";
        let s = parse(text).expect("valid");
        assert_eq!(s.limits.memory_bytes, Setting::Unlimited);
        assert_eq!(s.limits.pids, Setting::Unlimited);
        assert_eq!(s.instructions, "body\r\n");
        let l = s.limits.resolve(&Limits::default()).expect("resolves");
        assert_eq!((l.memory_bytes, l.pids), (None, None));
    }

    #[test]
    fn oversized_files_are_refused() {
        let big = format!("{MINIMAL}{}", "x".repeat(MAX_SKILL_BYTES));
        assert_eq!(field_of(&big), "file");
    }
}
