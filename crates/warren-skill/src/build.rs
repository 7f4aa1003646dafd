//! Building a sandbox from a skill: a workspace under the sandbox's own user id, the skill's
//! files, its packages copied in and installed inside the sandbox (a virtual environment in
//! `~/.venv` for python, `~/node_modules` for node), all within the skill's limits and network
//! setting. Any failure removes everything again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use warren_core::backend::blocking;
use warren_core::time::Timestamp;
use warren_core::{BackendKind, Error, ExecOutput, ExecRequest, Limits, UserId, WorkspacePath};
use warren_engine::{CreateOptions, Engine};

use crate::error::{Result, SkillError};
use crate::format::{self, Package, Runtime, Skill, MAX_PACKAGE_BYTES};
use crate::record::{
    BuildLog, BuildStatus, BuildStep, InstalledPackage, Records, SandboxId, SandboxRecord, RECORD_VERSION,
};

/// Most sandboxes one API caller may have at once.
pub const MAX_SANDBOXES_PER_OWNER: usize = 16;
/// Most output kept per build step, bytes (the end of it).
const STEP_OUTPUT: usize = 2048;
/// Where package files go inside the sandbox, relative to its home.
pub const PACKAGES_DIR: &str = ".skill/packages";

/// Where the package files a skill lists come from.
#[derive(Clone, Debug)]
pub enum PackageSource {
    /// Files relative to this directory (the skill file's).
    Dir(PathBuf),
    /// Files sent along, by the path the skill lists them under.
    Given(BTreeMap<String, Vec<u8>>),
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// The skill file's text.
    pub text: String,
    /// Its package files.
    pub packages: PackageSource,
    /// The API caller who builds it (`None`: the local CLI).
    pub owner: Option<UserId>,
    /// The backend (`None` or `Auto`: the engine's).
    pub backend: Option<BackendKind>,
    /// Where the skill file came from, for the record (a path, or `api`).
    pub origin: String,
    /// The most each limit may be (`None`: no cap). The server passes its default limits for
    /// callers who are not admins: a sandbox gets no more than a workspace would, and `unlimited`
    /// only where the default is.
    pub max_limits: Option<Limits>,
}

/// Serialises the per-owner count with the record that makes it grow (one process).
static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn tail(out: &ExecOutput) -> String {
    let mut all = out.stdout.clone();
    if !out.stderr.is_empty() {
        if !all.is_empty() && !all.ends_with(b"\n") {
            all.push(b'\n');
        }
        all.extend_from_slice(&out.stderr);
    }
    let start = all.len().saturating_sub(STEP_OUTPUT);
    let text = String::from_utf8_lossy(&all[start..]).into_owned();
    text.trim_end().to_owned()
}

/// Reads the package files the skill lists.
async fn load_packages(skill: &Skill, src: PackageSource) -> Result<Vec<(InstalledPackage, Vec<u8>)>> {
    let wanted: Vec<(usize, String, String)> = skill
        .packages
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Package::File { path, file_name } => Some((i, path.clone(), file_name.clone())),
            Package::Index { .. } => None,
        })
        .collect();
    let mut out = Vec::with_capacity(wanted.len());
    match src {
        PackageSource::Dir(dir) => {
            for (i, path, file_name) in wanted {
                let host = dir.join(&path);
                let field = format!("packages[{i}]");
                let data = blocking(move || {
                    let md = std::fs::metadata(&host)
                        .map_err(|e| Error::io(format!("reading package file {}", host.display()), e))?;
                    if !md.is_file() || md.len() > MAX_PACKAGE_BYTES {
                        return Err(Error::InvalidRequest(format!(
                            "{} is not a regular file of at most {MAX_PACKAGE_BYTES} bytes",
                            host.display()
                        )));
                    }
                    std::fs::read(&host).map_err(|e| Error::io(format!("reading package file {}", host.display()), e))
                })
                .await
                .map_err(|e| {
                    SkillError::invalid(field, format!("{e} (package files are relative to the skill file)"))
                })?;
                out.push((package_info(&path, &file_name, &data), data));
            }
        }
        PackageSource::Given(mut given) => {
            let mut normalized: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (k, v) in std::mem::take(&mut given) {
                let p = WorkspacePath::new(&k)
                    .map_err(|e| SkillError::invalid("package_files", format!("{k:?}: {e}")))?
                    .to_string();
                normalized.insert(p, v);
            }
            for (i, path, file_name) in wanted {
                let key = WorkspacePath::new(&path)?.to_string();
                let data = normalized.remove(&key).ok_or_else(|| {
                    SkillError::invalid(
                        format!("packages[{i}]"),
                        format!("{path} was not sent along: add it to package_files under that path"),
                    )
                })?;
                if data.len() as u64 > MAX_PACKAGE_BYTES {
                    return Err(SkillError::invalid(
                        format!("packages[{i}]"),
                        format!("{path} is larger than {MAX_PACKAGE_BYTES} bytes"),
                    ));
                }
                out.push((package_info(&path, &file_name, &data), data));
            }
            if let Some(extra) = normalized.keys().next() {
                return Err(SkillError::invalid(
                    "package_files",
                    format!("{extra} is not a package file of the skill: list it under packages, or leave it out"),
                ));
            }
        }
    }
    Ok(out)
}

fn package_info(path: &str, file_name: &str, data: &[u8]) -> InstalledPackage {
    let sha: String = Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect();
    InstalledPackage {
        spec: path.to_owned(),
        file_name: Some(file_name.to_owned()),
        bytes: Some(data.len() as u64),
        sha256: Some(sha),
    }
}

/// Refuses limits above `max`, naming the skill's field.
fn check_caps(l: &Limits, max: &Limits) -> Result<()> {
    fn over<T: PartialOrd + std::fmt::Display>(field: &str, v: Option<T>, cap: Option<T>) -> Result<()> {
        let Some(cap) = cap else { return Ok(()) };
        let shown = |x: &Option<T>| x.as_ref().map_or_else(|| "unlimited".to_owned(), ToString::to_string);
        if v.as_ref().is_none_or(|v| *v > cap) {
            return Err(SkillError::invalid(
                field,
                format!(
                    "asks for {}, more than the {cap} a sandbox may have here (the server's default limits); \
                     an admin can build it",
                    shown(&v)
                ),
            ));
        }
        Ok(())
    }
    over("limits.memory", l.memory_bytes, max.memory_bytes)?;
    over("limits.cpus", l.cpu_millis, max.cpu_millis)?;
    over("limits.pids", l.pids, max.pids)?;
    over("limits.disk", l.disk_bytes, max.disk_bytes)?;
    over("limits.open_files", Some(l.nofile), Some(max.nofile))
}

/// What the backend of `kind` does not enforce of `skill`.
fn warnings(kind: BackendKind, skill: &Skill) -> Vec<String> {
    let mut w = Vec::new();
    if kind == BackendKind::Dir {
        if !skill.network {
            w.push(
                "the dir backend does not cut the network: `network: false` is not enforced (use the ns or docker backend)"
                    .to_owned(),
            );
        }
        if skill.limits.memory_bytes != format::Setting::Unlimited {
            w.push(
                "the dir backend bounds memory per process as address space (RLIMIT_AS), not per sandbox: programs \
                 that reserve much of it (node, JVMs, Go) may fail to start; `memory: unlimited` or the ns backend avoid that"
                    .to_owned(),
            );
        }
        w.push("the dir backend does not bound CPU".to_owned());
    }
    w
}

/// Builds the sandbox of `req`; on failure nothing is left (or, if removing it failed too, a
/// record with status `failed` to clean up).
pub async fn build(engine: &Engine, records: &Records, req: BuildRequest) -> Result<SandboxRecord> {
    let started = Instant::now();
    let skill = format::parse(&req.text)?;
    let packages = load_packages(&skill, req.packages).await?;
    let limits = skill.limits.resolve(&engine.config().limits)?;
    if let Some(max) = &req.max_limits {
        check_caps(&limits, max)?;
    }
    let kind = req.backend.filter(|k| *k != BackendKind::Auto).unwrap_or_else(|| engine.backend_kind());
    let source_sha256: String = Sha256::digest(req.text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let warns = warnings(kind, &skill);

    let mut rec = {
        let _guard = CREATING.lock().await;
        if let Some(owner) = &req.owner {
            let n = records.list().await?.iter().filter(|r| r.owner.as_ref() == Some(owner)).count();
            if n >= MAX_SANDBOXES_PER_OWNER {
                return Err(SkillError::TooMany(format!(
                    "user {owner} has {n} skill sandboxes, the most allowed: clean some up first"
                )));
            }
        }
        let rec = SandboxRecord {
            format_version: RECORD_VERSION,
            id: SandboxId::generate()?,
            owner: req.owner.clone(),
            status: BuildStatus::Building,
            skill,
            source_sha256,
            origin: req.origin.clone(),
            backend: kind,
            workspace_id: None,
            home: None,
            limits: limits.clone(),
            build: BuildLog { warnings: warns, ..BuildLog::default() },
            error: None,
            created_at: Timestamp::now(),
        };
        records.save(&rec).await?;
        rec
    };
    let user = rec.id.user()?;
    info!(sandbox = %rec.id, skill = %rec.skill.name, backend = %kind, "building a skill sandbox");

    let mut b =
        Builder { engine, user: user.clone(), log: std::mem::take(&mut rec.build), name: rec.skill.name.clone() };
    let outcome = b.run(&mut rec, packages).await;
    rec.build = b.log;
    rec.build.duration_ms = millis(started.elapsed());
    match outcome {
        Ok(()) => {
            rec.status = BuildStatus::Ready;
            records.save(&rec).await?;
            let detail = serde_json::json!({
                "sandbox": rec.id.as_str(),
                "skill": rec.skill.name,
                "owner": rec.owner.as_ref().map(UserId::as_str),
                "backend": kind,
                "duration_ms": rec.build.duration_ms,
            });
            if let Err(e) = engine.audit(Some(&user), "skill_build", detail).await {
                warn!(error = %e, "recording the skill build in the audit trail failed");
            }
            info!(sandbox = %rec.id, ms = rec.build.duration_ms, "skill sandbox ready");
            Ok(rec)
        }
        Err(err) => {
            warn!(sandbox = %rec.id, error = %err, "the skill sandbox build failed; removing it");
            // No workspace id: the create itself failed, and the engine removed what it had made
            // (and an id that collided with another sandbox must not remove that one).
            let removed = if rec.workspace_id.is_some() { remove_workspace(engine, &user).await } else { Ok(()) };
            let err = match err {
                SkillError::Build { name, step, message, .. } => {
                    SkillError::Build { name, step, message, log: rec.build.steps.clone() }
                }
                other => other,
            };
            match removed {
                Ok(()) => {
                    records.remove(&rec.id).await?;
                    Err(err)
                }
                Err(e) => {
                    rec.status = BuildStatus::Failed;
                    rec.error = Some(format!("{err}; removing the sandbox failed too: {e}"));
                    records.save(&rec).await?;
                    Err(SkillError::Build {
                        name: rec.skill.name.clone(),
                        step: "cleanup".into(),
                        message: format!(
                            "{err}; removing the sandbox failed too ({e}): run `warren skill cleanup {}`",
                            rec.id
                        ),
                        log: rec.build.steps.clone(),
                    })
                }
            }
        }
    }
}

/// Destroys the workspace of `user`; an absent workspace is fine.
pub(crate) async fn remove_workspace(engine: &Engine, user: &UserId) -> warren_core::Result<()> {
    match engine.destroy(user).await {
        Ok(()) | Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

struct Builder<'a> {
    engine: &'a Engine,
    user: UserId,
    log: BuildLog,
    name: String,
}

impl Builder<'_> {
    fn fail(&self, step: &str, message: impl Into<String>) -> SkillError {
        SkillError::Build { name: self.name.clone(), step: step.to_owned(), message: message.into(), log: Vec::new() }
    }

    fn note(&mut self, step: &str, started: Instant, ok: bool, exit_code: Option<i32>, output: String) {
        self.log.steps.push(BuildStep {
            step: step.to_owned(),
            ok,
            exit_code,
            duration_ms: millis(started.elapsed()),
            output,
        });
    }

    /// A step that is an engine call.
    async fn call<T>(
        &mut self,
        step: &str,
        done: &str,
        f: impl std::future::Future<Output = warren_core::Result<T>>,
    ) -> Result<T> {
        let t = Instant::now();
        match f.await {
            Ok(v) => {
                self.note(step, t, true, None, done.to_owned());
                Ok(v)
            }
            Err(e) => {
                self.note(step, t, false, None, e.to_string());
                Err(self.fail(step, e.to_string()))
            }
        }
    }

    /// A step that runs a command in the sandbox; a non-zero exit fails it with `hint`.
    async fn exec(&mut self, step: &str, rec: &SandboxRecord, argv: Vec<String>, hint: &str) -> Result<ExecOutput> {
        let t = Instant::now();
        let shown = argv.join(" ");
        let mut env: Vec<(String, String)> = vec![
            ("PIP_NO_INPUT".into(), "1".into()),
            ("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into()),
            ("npm_config_update_notifier".into(), "false".into()),
            ("npm_config_fund".into(), "false".into()),
            ("npm_config_audit".into(), "false".into()),
        ];
        env.extend(rec.skill.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        let req = ExecRequest {
            argv,
            env,
            cwd: None,
            stdin: None,
            timeout: Some(rec.skill.limits.build_timeout()),
            tty: None,
        };
        let out = match self.engine.exec(&self.user, req).await {
            Ok(o) => o,
            Err(e) => {
                self.note(step, t, false, None, e.to_string());
                return Err(self.fail(step, format!("running `{shown}` failed: {e}")));
            }
        };
        let output = tail(&out);
        if out.timed_out {
            self.note(step, t, false, Some(out.exit_code), output.clone());
            return Err(self.fail(
                step,
                format!(
                    "`{shown}` ran longer than the build timeout ({} ms; limits.build_timeout) and was killed; output: {output}",
                    rec.skill.limits.build_timeout_ms
                ),
            ));
        }
        if out.exit_code != 0 {
            self.note(step, t, false, Some(out.exit_code), output.clone());
            return Err(self.fail(step, format!("`{shown}` exited with {}: {hint}; output: {output}", out.exit_code)));
        }
        self.note(step, t, true, Some(0), output);
        Ok(out)
    }

    async fn run(&mut self, rec: &mut SandboxRecord, packages: Vec<(InstalledPackage, Vec<u8>)>) -> Result<()> {
        let engine = self.engine;
        let user = self.user.clone();
        let opts = CreateOptions {
            limits: Some(rec.limits.clone()),
            network: Some(rec.skill.network),
            backend: Some(rec.backend),
            image: rec.skill.image.clone(),
            ..Default::default()
        };
        let info = self.call("create", "workspace created", engine.create(&user, opts)).await?;
        rec.workspace_id = Some(info.workspace_id.clone());
        self.call("start", "workspace running", engine.ensure_running(&user)).await?;

        let out = self
            .exec(
                "home",
                rec,
                vec!["/bin/sh".into(), "-c".into(), "printf %s \"$HOME\"".into()],
                "the sandbox has no /bin/sh",
            )
            .await?;
        let home = String::from_utf8_lossy(&out.stdout).into_owned();
        if !home.starts_with('/') || home.contains('\n') {
            return Err(self.fail("home", format!("the sandbox's HOME is {home:?}, not an absolute path")));
        }
        rec.home = Some(home.clone());

        let t = Instant::now();
        let files = rec.skill.files.clone();
        let workdir = rec.skill.workdir.clone();
        let mut written = 0usize;
        if !workdir.is_root() {
            if let Err(e) = engine.make_dir(&user, &workdir).await {
                self.note("files", t, false, None, e.to_string());
                return Err(self.fail("files", format!("creating the workdir {workdir}: {e}")));
            }
        }
        for f in files {
            let path = workdir.join(&f.path);
            if let Err(e) = engine.write_file(&user, &path, f.content.into_bytes(), f.mode).await {
                self.note("files", t, false, None, e.to_string());
                return Err(self.fail("files", format!("writing {path}: {e}")));
            }
            written += 1;
        }
        self.note("files", t, true, None, format!("{written} files written"));

        let t = Instant::now();
        let mut paths = Vec::new();
        for (info, data) in packages {
            let Some(name) = info.file_name.clone() else { continue };
            let dest = WorkspacePath::new(format!("{PACKAGES_DIR}/{name}"))?;
            if let Err(e) = engine.write_file(&user, &dest, data, 0o644).await {
                self.note("packages", t, false, None, e.to_string());
                return Err(self.fail("packages", format!("copying {name} into the sandbox: {e}")));
            }
            paths.push(format!("{home}/{dest}"));
            self.log.packages.push(info);
        }
        let specs: Vec<String> = rec
            .skill
            .packages
            .iter()
            .filter_map(|p| match p {
                Package::Index { spec } => Some(spec.clone()),
                Package::File { .. } => None,
            })
            .collect();
        for spec in &specs {
            self.log.packages.push(InstalledPackage { spec: spec.clone(), file_name: None, bytes: None, sha256: None });
        }
        if !paths.is_empty() {
            self.note("packages", t, true, None, format!("{} package files copied to ~/{PACKAGES_DIR}", paths.len()));
        }

        match rec.skill.runtime {
            Runtime::Python => self.python(rec, &home, paths, specs).await?,
            Runtime::Node => self.node(rec, &home, paths, specs).await?,
            Runtime::Shell => {}
        }
        Ok(())
    }

    async fn python(&mut self, rec: &SandboxRecord, home: &str, files: Vec<String>, specs: Vec<String>) -> Result<()> {
        let venv = format!("{home}/.venv");
        self.exec(
            "venv",
            rec,
            vec!["python3".into(), "-m".into(), "venv".into(), venv.clone()],
            "a python skill needs python3 with its venv module inside the sandbox (Debian: python3-venv)",
        )
        .await?;
        let python = format!("{venv}/bin/python");
        if !files.is_empty() || !specs.is_empty() {
            let mut argv: Vec<String> = [python.as_str(), "-m", "pip", "install", "--no-input", "--no-cache-dir"]
                .into_iter()
                .map(String::from)
                .collect();
            if specs.is_empty() {
                argv.push("--no-index".into());
            }
            argv.push("--find-links".into());
            argv.push(format!("{home}/{PACKAGES_DIR}"));
            argv.extend(files);
            argv.extend(specs.iter().cloned());
            let hint = if specs.is_empty() {
                "pip could not install the wheels without an index: a wheel's dependencies must be listed as wheels too"
            } else {
                "pip could not install the packages (is the index reachable from the sandbox?)"
            };
            self.exec("pip_install", rec, argv, hint).await?;
        }
        let out = self
            .exec(
                "check",
                rec,
                vec![python, "-c".into(), "import sys; print(sys.version.split()[0])".into()],
                "the virtual environment's python does not run",
            )
            .await?;
        self.log.runtime_version = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        Ok(())
    }

    async fn node(&mut self, rec: &SandboxRecord, home: &str, files: Vec<String>, specs: Vec<String>) -> Result<()> {
        let out = self
            .exec("node", rec, vec!["node".into(), "--version".into()], "a node skill needs node inside the sandbox")
            .await?;
        self.log.runtime_version = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        if files.is_empty() && specs.is_empty() {
            return Ok(());
        }
        let mut argv: Vec<String> = ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--no-update-notifier"]
            .into_iter()
            .map(String::from)
            .collect();
        if specs.is_empty() {
            argv.push("--offline".into());
        }
        argv.push("--prefix".into());
        argv.push(home.to_owned());
        argv.extend(files);
        argv.extend(specs);
        self.exec(
            "npm_install",
            rec,
            argv,
            "npm could not install the packages (a tarball's dependencies must be tarballs too)",
        )
        .await?;
        Ok(())
    }
}
