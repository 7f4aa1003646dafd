//! The `docker` backend: one container per workspace, driven through the Docker Engine API
//! (`bollard` over the daemon's unix socket; never the docker CLI).
//!
//! * The container is named `warren-{workspace_id}` and labelled `warren.workspace=<id>`,
//!   `warren.user=<user>`, `warren.state=<state dir>`. A restarted warren finds it again by that
//!   name (re-adoption) and reads its state from `inspect`: the host is the truth.
//! * The workspace's home is the host directory `{state}/workspaces/{user}` (0700, owned by the
//!   workspace uid), bind-mounted at `/home/<username>`: files persist across stop/start and
//!   destroy of the container, and the default file operations ([`Backend::host_files`]) work
//!   unchanged on the host.
//! * `/etc/passwd` and `/etc/group` are generated in `{state}/run/docker/{workspace_id}/` and
//!   bind-mounted read-only, so the workspace account resolves (`id -un`) in any image.
//! * Processes run as the spec's `uid:gid`, with every capability dropped, `no-new-privileges`,
//!   docker's default seccomp profile, `--network none` unless the spec asks for network, memory
//!   (swap equal to memory: no swap on top), nano-cpus, pids, `nofile` and (with a disk limit)
//!   `fsize` limits, a read-only root with a tmpfs `/tmp` ([`DockerOptions::read_only_root`],
//!   default on; made root's and 1777 from the host at start, whatever the image's `/tmp` is),
//!   and docker's init as pid 1 (it reaps orphans).
//! * `start` creates and starts a fresh container from the spec (so changed limits apply); `stop`
//!   removes the container (killing everything in it); `destroy` also removes the home.
//! * Exec uses the exec API with an attached, demultiplexed stream (or a tty, resized through the
//!   exec resize API); the exit code comes from exec inspect. Docker reports a command killed by a
//!   signal as `128 + signal`, so an exit code in `129..=192` is reported as that signal.
//!   Signals and the kill when the handle is dropped go to the command's process group on the
//!   host: docker starts every exec as a session leader, and exec inspect gives its host pid (so
//!   warren must run on the docker host, which the bind-mounted home requires anyway).
//! * Stats come from the stats API (one shot; memory is the working set, usage less inactive
//!   file cache, as `docker stats` shows it), the limit from inspect, disk from the home on the
//!   host. Disk quota: bind mounts have no quota in docker; `RLIMIT_FSIZE` caps each file and
//!   the resource monitor the home's total.
//! * Freeze is pause/unpause (the cgroup freezer).

use std::collections::HashMap;
use std::fmt;
use std::fs::DirBuilder;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use futures::StreamExt;
use warren_core::backend::HostFiles;
use warren_core::{
    Backend, BackendKind, Capabilities, Error, ExecHandle, ExecRequest, IsolationLevel, Result, State, Stats, Status,
    WorkspaceSpec,
};

mod exec;
pub mod image;
pub mod pool;
pub mod save;

/// The Engine API version warren speaks (Docker 20.10 and later; `one-shot` stats need 1.41).
pub const API_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// Lowest uid/gid a workspace may run as.
pub const MIN_UID: u32 = 1000;

/// Image used when neither the options nor the environment name one.
pub const DEFAULT_IMAGE: &str = "warren-workspace:latest";

/// How the backend reaches the daemon and builds containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerOptions {
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// Image every workspace container runs (needs `/bin/sh`).
    pub image: String,
    /// Read-only root filesystem with a tmpfs `/tmp`.
    pub read_only_root: bool,
    /// Size of the tmpfs `/tmp` (a `tmpfs` mount option, e.g. `256m`); counts towards memory.
    pub tmp_size: String,
}

impl Default for DockerOptions {
    /// The socket from `DOCKER_HOST` (`unix://...`) or `/var/run/docker.sock`; the image from
    /// `WARREN_CONTAINER_IMAGE` or `CONTAINER_IMAGE`, else [`DEFAULT_IMAGE`].
    fn default() -> Self {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let image = std::env::var("WARREN_CONTAINER_IMAGE")
            .or_else(|_| std::env::var("CONTAINER_IMAGE"))
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        Self { socket, image, read_only_root: true, tmp_size: "256m".to_owned() }
    }
}

/// The docker backend. Cheap to clone.
#[derive(Clone)]
pub struct DockerBackend {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    state_dir: PathBuf,
    workspaces: PathBuf,
    run_dir: PathBuf,
    opts: DockerOptions,
}

impl fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerBackend")
            .field("state_dir", &self.inner.state_dir)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// Maps a docker API error to warren's: 404 NotFound, 409 Conflict, the rest Internal.
pub(crate) fn api_err(what: &str, e: bollard::errors::Error) -> Error {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => {
            Error::NotFound(format!("{what}: {message}"))
        }
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message } => {
            Error::Conflict(format!("{what}: {message}"))
        }
        other => Error::Internal(format!("{what}: the docker daemon answered: {other}")),
    }
}

fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// The per-process limits every workspace container gets: `nofile`, and `fsize` (the largest file
/// a process may write) when the workspace has a disk limit, as on `ns` and `dir`.
pub(crate) fn ulimits(l: &warren_core::Limits) -> Vec<ResourcesUlimits> {
    let ulimit = |name: &str, v: u64| {
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        ResourcesUlimits { name: Some(name.to_owned()), soft: Some(v), hard: Some(v) }
    };
    let mut u = vec![ulimit("nofile", l.nofile)];
    if let Some(d) = l.disk_bytes {
        u.push(ulimit("fsize", d));
    }
    u
}

/// The tmpfs `/tmp` of a read-only root (`size` is a tmpfs size option such as `256m`).
pub(crate) fn tmp_tmpfs(size: &str) -> HashMap<String, String> {
    HashMap::from([("/tmp".to_owned(), format!("rw,nosuid,nodev,size={size},mode=1777"))])
}

/// Makes the container's `/tmp` root-owned and 1777, from the host, before any command runs in
/// it. Docker copies the image's `/tmp` owner and mode onto the tmpfs it mounts there (its
/// `mode=` option loses), so an image whose `/tmp` is 0755 would leave the workspace without a
/// writable `/tmp`. `pid` is the container's init on the host; `/proc/{pid}/root` is the
/// container's own view of its root.
pub(crate) async fn open_tmp(container: &str, pid: u32) -> Result<()> {
    let container = container.to_owned();
    blocking(move || {
        let tmp = PathBuf::from(format!("/proc/{pid}/root/tmp"));
        let fail = |what: &str, e: std::io::Error| {
            Error::io(format!("{what} /tmp of container {container} (through {})", tmp.display()), e)
        };
        let md = std::fs::symlink_metadata(&tmp).map_err(|e| fail("reading", e))?;
        if !md.is_dir() {
            return Err(Error::Internal(format!(
                "/tmp of container {container} is not a directory; the image must have a /tmp directory or none"
            )));
        }
        std::os::unix::fs::lchown(&tmp, Some(0), Some(0)).map_err(|e| fail("chowning", e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(|e| fail("chmodding", e))
    })
    .await
}

fn check_spec(spec: &WorkspaceSpec) -> Result<()> {
    for (what, id) in [("uid", spec.uid), ("gid", spec.gid)] {
        if id < MIN_UID || id == 65534 || id == u32::MAX {
            return Err(Error::InvalidRequest(format!(
                "workspace {what} {id} is a system or reserved id: workspace uids must be at least {MIN_UID} and dedicated to the workspace"
            )));
        }
    }
    if spec.username.is_empty() || !spec.username.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(Error::InvalidRequest(format!("username {:?} is not a valid account name", spec.username)));
    }
    if let Some(image) = &spec.image {
        warren_core::config::check_image_name(image)?;
    }
    Ok(())
}

impl DockerBackend {
    /// Opens the backend on `state_dir` with [`DockerOptions::default`].
    pub fn new(state_dir: &Path) -> Result<Self> {
        Self::with_options(state_dir, DockerOptions::default())
    }

    /// Opens the backend on `state_dir` with `opts`. Does not talk to the daemon yet.
    pub fn with_options(state_dir: &Path, opts: DockerOptions) -> Result<Self> {
        let socket = opts.socket.to_str().ok_or_else(|| {
            Error::InvalidRequest(format!("docker socket path {} is not UTF-8", opts.socket.display()))
        })?;
        let docker = Docker::connect_with_unix(socket, 120, &API_VERSION).map_err(|e| {
            Error::Unsupported(format!("cannot use the docker daemon at {socket}: {e}; is dockerd running?"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                state_dir: state_dir.to_path_buf(),
                workspaces: state_dir.join("workspaces"),
                run_dir: state_dir.join("run").join("docker"),
                opts,
            }),
        })
    }

    /// Whether a docker daemon answers `/_ping` on the default socket within 3 s.
    pub fn probe() -> std::result::Result<(), String> {
        Self::probe_socket(&DockerOptions::default().socket)
    }

    /// Whether a docker daemon answers `/_ping` on `socket` within 3 s (blocking; no runtime needed).
    pub fn probe_socket(socket: &Path) -> std::result::Result<(), String> {
        let limit = Some(Duration::from_secs(3));
        let mut s = std::os::unix::net::UnixStream::connect(socket)
            .map_err(|e| format!("no docker daemon at {}: {e}", socket.display()))?;
        s.set_read_timeout(limit).map_err(|e| e.to_string())?;
        s.set_write_timeout(limit).map_err(|e| e.to_string())?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .map_err(|e| format!("writing to the docker socket {}: {e}", socket.display()))?;
        let mut answer = String::new();
        s.take(64 << 10)
            .read_to_string(&mut answer)
            .map_err(|e| format!("the docker daemon at {} did not answer /_ping: {e}", socket.display()))?;
        let status_ok = answer.lines().next().is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
        if status_ok && answer.trim_end().ends_with("OK") {
            Ok(())
        } else {
            Err(format!(
                "the docker daemon at {} answered /_ping with {:?}",
                socket.display(),
                answer.lines().next().unwrap_or("")
            ))
        }
    }

    /// The API client.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The options this backend was opened with.
    pub fn options(&self) -> &DockerOptions {
        &self.inner.opts
    }

    /// The container name of a workspace.
    pub fn container_name(spec: &WorkspaceSpec) -> String {
        format!("warren-{}", spec.id)
    }

    fn home(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.inner.workspaces.join(spec.user.as_str())
    }

    fn run_dir(&self, spec: &WorkspaceSpec) -> PathBuf {
        self.inner.run_dir.join(spec.id.as_str())
    }

    pub(crate) fn home_in_container(spec: &WorkspaceSpec) -> String {
        format!("/home/{}", spec.username)
    }

    async fn inspect(&self, spec: &WorkspaceSpec) -> Result<Option<ContainerInspectResponse>> {
        let name = Self::container_name(spec);
        match self.inner.docker.inspect_container(&name, None::<InspectContainerOptions>).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(api_err(&format!("inspecting container {name}"), e)),
        }
    }

    fn prepare(&self) -> Result<()> {
        for dir in [&self.inner.state_dir, &self.inner.workspaces] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::io(format!("making {} mode 0711", dir.display()), e))?;
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.inner.run_dir)
            .map_err(|e| Error::io(format!("creating {}", self.inner.run_dir.display()), e))
    }

    fn create_home(&self, spec: &WorkspaceSpec) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        self.prepare()?;
        let home = self.home(spec);
        match std::fs::symlink_metadata(&home) {
            Ok(md) => {
                if !md.is_dir() || md.uid() != spec.uid {
                    return Err(Error::Conflict(format!(
                        "{} exists but is not a directory owned by uid {}: remove it or fix its owner",
                        home.display(),
                        spec.uid
                    )));
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("looking at {}", home.display()), e)),
        }
        warren_core::fs::create_private_dir(&home, spec.uid, spec.gid)
    }

    /// Writes the run directory's `passwd` and `group` (bind-mounted read-only into the container).
    fn write_accounts(&self, spec: &WorkspaceSpec) -> Result<PathBuf> {
        self.prepare()?;
        let dir = self.run_dir(spec);
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let home = Self::home_in_container(spec);
        let passwd = format!(
            "root:x:0:0:root:/root:/bin/sh\n{u}:x:{uid}:{gid}:{u}:{home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            u = spec.username,
            uid = spec.uid,
            gid = spec.gid
        );
        let group = format!("root:x:0:\n{u}:x:{gid}:\nnogroup:x:65534:\n", u = spec.username, gid = spec.gid);
        for (name, body) in [("passwd", passwd), ("group", group)] {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, body).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::io(format!("making {} mode 0644", tmp.display()), e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("moving {} into place", path.display()), e))?;
        }
        Ok(dir)
    }

    /// The image `spec` runs: its own, else the configured one.
    fn image_of<'a>(&'a self, spec: &'a WorkspaceSpec) -> &'a str {
        spec.image.as_deref().unwrap_or(&self.inner.opts.image)
    }

    fn container_config(&self, spec: &WorkspaceSpec, run: &Path) -> ContainerCreateBody {
        let home_host = self.home(spec);
        let home = Self::home_in_container(spec);
        let mut labels = HashMap::new();
        labels.insert("warren.workspace".to_owned(), spec.id.to_string());
        labels.insert("warren.user".to_owned(), spec.user.to_string());
        labels.insert("warren.state".to_owned(), self.inner.state_dir.display().to_string());
        let l = &spec.limits;
        let host = HostConfig {
            binds: Some(vec![
                format!("{}:{home}:rw", home_host.display()),
                format!("{}:/etc/passwd:ro", run.join("passwd").display()),
                format!("{}:/etc/group:ro", run.join("group").display()),
            ]),
            network_mode: if spec.network { None } else { Some("none".to_owned()) },
            memory: l.memory_bytes.map(|m| m as i64),
            memory_swap: l.memory_bytes.map(|m| m as i64),
            nano_cpus: l.cpu_millis.map(|c| i64::from(c) * 1_000_000),
            pids_limit: l.pids.map(i64::from),
            ulimits: Some(ulimits(l)),
            readonly_rootfs: Some(self.inner.opts.read_only_root),
            tmpfs: self.inner.opts.read_only_root.then(|| tmp_tmpfs(&self.inner.opts.tmp_size)),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            init: Some(true),
            ipc_mode: Some("private".to_owned()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image_of(spec).to_owned()),
            cmd: Some(vec!["sleep".to_owned(), "2147483647".to_owned()]),
            entrypoint: Some(vec![]),
            user: Some(format!("{}:{}", spec.uid, spec.gid)),
            hostname: Some(spec.username.replace('_', "-")),
            working_dir: Some(home),
            env: Some(
                ExecRequest::default()
                    .environment(spec, &Self::home_in_container(spec))
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        }
    }

    async fn remove_container(&self, spec: &WorkspaceSpec) -> Result<()> {
        let name = Self::container_name(spec);
        if let Some(c) = self.inspect(spec).await? {
            if c.state.as_ref().and_then(|s| s.paused).unwrap_or(false) {
                let _ = self.inner.docker.unpause_container(&name).await;
            }
        }
        let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.inner.docker.remove_container(&name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                // Removal already in progress: wait for it to finish.
                for _ in 0..100 {
                    if self.inspect(spec).await?.is_none() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(api_err(&format!("removing container {name}"), e))
            }
            Err(e) => Err(api_err(&format!("removing container {name}"), e)),
        }
    }

    fn running_of(c: &ContainerInspectResponse) -> bool {
        c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
    }

    fn pid_of(c: &ContainerInspectResponse) -> Option<u32> {
        c.state.as_ref().and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0)
    }

    pub(crate) async fn require_running(&self, spec: &WorkspaceSpec) -> Result<()> {
        match self.status(spec).await?.state {
            State::Running => Ok(()),
            State::Stopped => {
                Err(Error::Conflict(format!("workspace of user {} is stopped; start it first", spec.user)))
            }
            State::Absent => Err(Error::NotFound(format!("workspace of user {}", spec.user))),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    warren_core::backend::blocking(f).await
}

#[async_trait]
impl Backend for DockerBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: BackendKind::Docker,
            isolation: IsolationLevel::Container,
            memory_limit: true,
            cpu_limit: true,
            pids_limit: true,
            network_isolation: true,
            process_isolation: true,
            freeze: true,
            tty: true,
        }
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn create(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        spec.limits.validate()?;
        // A workspace of an image that was never imported fails now, not at its first start.
        if let Some(image) = &spec.image {
            if !image::exists(&self.inner.docker, image).await? {
                return Err(Error::NotFound(format!(
                    "the image {image} in the docker daemon: import it with `warren image import <rootfs> --tag {image}`"
                )));
            }
        }
        let (this, s) = (self.clone(), spec.clone());
        blocking(move || this.create_home(&s)).await?;
        tracing::info!("workspace directory ready");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn start(&self, spec: &WorkspaceSpec) -> Result<Status> {
        check_spec(spec)?;
        spec.limits.validate()?;
        let name = Self::container_name(spec);
        if let Some(c) = self.inspect(spec).await? {
            if Self::running_of(&c) {
                return Ok(Status { state: State::Running, pid: Self::pid_of(&c) });
            }
            // A container left stopped (warren killed mid-stop, the daemon restarted): start afresh.
            self.remove_container(spec).await?;
        }
        let (this, s) = (self.clone(), spec.clone());
        let run = blocking(move || {
            if !this.home(&s).is_dir() {
                return Err(Error::NotFound(format!("workspace of user {}: create it first", s.user)));
            }
            this.write_accounts(&s)
        })
        .await?;
        let config = self.container_config(spec, &run);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        self.inner.docker.create_container(Some(opts), config).await.map_err(|e| {
            let hint = if is_status(&e, 404) {
                format!(" (is the image {} imported? see `warren image import`)", self.image_of(spec))
            } else {
                String::new()
            };
            match api_err(&format!("creating container {name}{hint}"), e) {
                Error::NotFound(m) => Error::NotFound(m),
                other => other,
            }
        })?;
        if let Err(e) = self.inner.docker.start_container(&name, None).await {
            let _ = self.remove_container(spec).await;
            return Err(api_err(&format!("starting container {name}"), e));
        }
        let pid = self.inspect(spec).await?.as_ref().and_then(Self::pid_of);
        if self.inner.opts.read_only_root {
            let opened = match pid {
                Some(pid) => open_tmp(&name, pid).await,
                None => Err(Error::Internal(format!("container {name} is not running right after its start"))),
            };
            if let Err(e) = opened {
                let _ = self.remove_container(spec).await;
                return Err(e);
            }
        }
        tracing::info!(container = %name, "workspace container started");
        Ok(Status { state: State::Running, pid })
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn stop(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        self.remove_container(spec).await?;
        tracing::info!("workspace stopped");
        Ok(())
    }

    async fn status(&self, spec: &WorkspaceSpec) -> Result<Status> {
        if let Some(c) = self.inspect(spec).await? {
            if Self::running_of(&c) {
                return Ok(Status { state: State::Running, pid: Self::pid_of(&c) });
            }
        }
        let home = self.home(spec);
        let exists = blocking(move || Ok(home.is_dir())).await?;
        Ok(Status { state: if exists { State::Stopped } else { State::Absent }, pid: None })
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn destroy(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        self.remove_container(spec).await?;
        let (home, run) = (self.home(spec), self.run_dir(spec));
        blocking(move || {
            for dir in [home, run] {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
                }
            }
            Ok(())
        })
        .await?;
        tracing::info!("workspace destroyed");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn exec_stream(&self, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecHandle> {
        check_spec(spec)?;
        req.validate()?;
        exec::start(self, spec, req).await
    }

    async fn stats(&self, spec: &WorkspaceSpec) -> Result<Stats> {
        let home = self.home(spec);
        let disk = blocking(move || Ok(warren_core::backend::disk_usage(&home))).await?;
        let mut st = Stats { disk_bytes: disk, memory_limit_bytes: spec.limits.memory_bytes, ..Default::default() };
        let Some(c) = self.inspect(spec).await? else { return Ok(st) };
        if let Some(m) = c.host_config.as_ref().and_then(|h| h.memory).filter(|m| *m > 0) {
            st.memory_limit_bytes = Some(m as u64);
        }
        if !Self::running_of(&c) {
            return Ok(st);
        }
        let name = Self::container_name(spec);
        let opts = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
        let mut stream = self.inner.docker.stats(&name, Some(opts));
        if let Some(r) = stream.next().await {
            let s = r.map_err(|e| api_err(&format!("reading the stats of container {name}"), e))?;
            st.cpu_usage_ns =
                s.cpu_stats.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0);
            // The working set, as `docker stats` shows it: usage less the inactive file cache
            // (`total_inactive_file` on cgroup v1, `inactive_file` on v2).
            st.memory_bytes = s.memory_stats.as_ref().map_or(0, |m| {
                let stat = |k: &str| m.stats.as_ref().and_then(|s| s.get(k).copied());
                warren_sys::cgroup::working_set(m.usage, stat("total_inactive_file").or_else(|| stat("inactive_file")))
            });
            st.pids = s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0);
        }
        Ok(st)
    }

    fn host_files(&self, spec: &WorkspaceSpec) -> Option<HostFiles> {
        Some(HostFiles { dir: self.home(spec), uid: spec.uid, gid: spec.gid })
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id, frozen))]
    async fn freeze(&self, spec: &WorkspaceSpec, frozen: bool) -> Result<()> {
        let name = Self::container_name(spec);
        let c = self
            .inspect(spec)
            .await?
            .filter(Self::running_of)
            .ok_or_else(|| Error::Conflict(format!("workspace of user {} is not running", spec.user)))?;
        let paused = c.state.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused == frozen {
            return Ok(());
        }
        let r = if frozen {
            self.inner.docker.pause_container(&name).await
        } else {
            self.inner.docker.unpause_container(&name).await
        };
        r.map_err(|e| api_err(&format!("{} container {name}", if frozen { "pausing" } else { "unpausing" }), e))
    }
}
