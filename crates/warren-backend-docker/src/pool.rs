//! The `pool` backend: the seed's pooled mode. Many users share a few long-lived containers.
//!
//! * At most [`PoolOptions::max_containers`] containers, `warren-pool-{tag}-{n}` (the tag is a
//!   hash of the state directory, so two warrens on one daemon never share one), each with at
//!   most [`PoolOptions::users_per_container`] users. A new user goes to the container with the
//!   fewest users (the lowest index on a tie); a full pool is an [`Error::Exhausted`].
//! * The placement (user -> container, uid, username) is kept in
//!   `{state}/run/pool/placement.json`, written atomically under a file lock: the same user
//!   lands in the same container with the same account after any restart.
//! * The account: the user's fixed uid and deterministic username
//!   ([`warren_core::UserId::linux_username`]), in the container's `/etc/passwd` and
//!   `/etc/group` (generated on the host, bind-mounted read-only, rewritten in place when the
//!   container's users change).
//! * The home is `/workspace/<username>` (0700, owned by the user's uid) on the host directory
//!   `{state}/pool/{n}/` (0711 root) bind-mounted at `/workspace`: it persists across container
//!   restarts and removal, and the host file operations and snapshots work on it unchanged.
//! * Every command runs as the user's uid (never root), with every capability dropped and
//!   `no-new-privileges`, so users cannot read each other's homes or signal each other's
//!   processes. The container's `/proc` is remounted with `hidepid=invisible` right after
//!   the container starts (from the host, in the container's mount namespace), so users do not
//!   see each other's processes either. `TMPDIR` points into the user's home (`/tmp` is shared,
//!   root's and sticky). What users of one container do share: its loopback interface (a
//!   server one user starts on 127.0.0.1 is reachable by the others), abstract unix sockets and
//!   SysV IPC, its `/tmp`, and its memory, CPU and pids limits. Pooled mode is the seed's
//!   density trade-off; where users must not share those, use `ns` or `docker`.
//! * `start` marks the user running (starting the container if needed); `stop` kills every
//!   process of the user's uid (on the host: the uid is the user's alone) and marks them
//!   stopped; `destroy` also removes the account and the home.
//! * Limits: memory, cpus and pids apply to a container as a whole (sized for a full container
//!   of users with the first user's limits); per user, the resource monitor enforces them.
//!   Network: pooled containers have none.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use bollard::Docker;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use warren_core::backend::HostFiles;
use warren_core::{
    Backend, BackendKind, Capabilities, Error, ExecHandle, ExecRequest, IsolationLevel, Result, State, Stats, Status,
    WorkspaceSpec,
};

use crate::exec::{start_in, Target};
use crate::{api_err, blocking, check_spec, is_status, DockerBackend, DockerOptions};

/// The version of `placement.json` this build writes.
const PLACEMENT_VERSION: u32 = 1;

/// Sizes of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most containers.
    pub max_containers: u32,
    /// Most users per container.
    pub users_per_container: u32,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_containers: 10, users_per_container: 20 }
    }
}

/// Where a user lives in the pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    /// The container's index.
    pub container: u32,
    /// The user's uid.
    pub uid: u32,
    /// The user's account name.
    pub username: String,
    /// Started (and not stopped since).
    pub running: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Placement {
    version: u32,
    users: BTreeMap<String, Seat>,
}

/// The pool backend. Cheap to clone.
#[derive(Clone)]
pub struct DockerPool {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    state_dir: PathBuf,
    homes: PathBuf,
    run: PathBuf,
    tag: String,
    opts: DockerOptions,
    pool: PoolOptions,
}

impl fmt::Debug for DockerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerPool")
            .field("state_dir", &self.inner.state_dir)
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("making {} mode {mode:o}", path.display()), e))
}

impl DockerPool {
    /// Opens the pool on `state_dir`.
    pub fn new(state_dir: &Path, opts: DockerOptions, pool: PoolOptions) -> Result<Self> {
        if pool.max_containers == 0 || pool.users_per_container == 0 {
            return Err(Error::InvalidRequest(
                "the pool needs at least one container and one user per container".into(),
            ));
        }
        let single = DockerBackend::with_options(state_dir, opts.clone())?;
        let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let tag: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                docker: single.docker().clone(),
                state_dir: state_dir.to_owned(),
                homes: state_dir.join("pool"),
                run: state_dir.join("run").join("pool"),
                tag,
                opts,
                pool,
            }),
        })
    }

    /// The daemon client.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The name of container `n`.
    pub fn container_name(&self, n: u32) -> String {
        format!("warren-pool-{}-{n}", self.inner.tag)
    }

    /// The seat of `user`, if placed.
    pub fn seat(&self, user: &str) -> Result<Option<Seat>> {
        Ok(self.read_placement()?.users.get(user).cloned())
    }

    fn home(&self, seat: &Seat) -> PathBuf {
        self.inner.homes.join(seat.container.to_string()).join(&seat.username)
    }

    fn home_in_container(username: &str) -> String {
        format!("/workspace/{username}")
    }

    fn lock(&self) -> Result<Flock<File>> {
        mkdir(&self.inner.run, 0o700)?;
        let path = self.inner.run.join("placement.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::errno(format!("locking {}", path.display()), e))
    }

    fn read_placement(&self) -> Result<Placement> {
        let path = self.inner.run.join("placement.json");
        match std::fs::read(&path) {
            Ok(b) => {
                let p: Placement = serde_json::from_slice(&b).map_err(|e| {
                    Error::Internal(format!("{} is not valid ({e}); restore it from a backup", path.display()))
                })?;
                if p.version > PLACEMENT_VERSION {
                    return Err(Error::Internal(format!(
                        "{} has version {}, newer than this warren knows ({PLACEMENT_VERSION}): upgrade warren",
                        path.display(),
                        p.version
                    )));
                }
                Ok(p)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Placement { version: PLACEMENT_VERSION, users: BTreeMap::new() })
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn write_placement(&self, p: &Placement) -> Result<()> {
        let body = serde_json::to_vec_pretty(p).map_err(|e| Error::Internal(format!("encoding the placement: {e}")))?;
        warren_core::fs::write_atomic(&self.inner.run.join("placement.json"), &body, 0o600)
    }

    /// Changes the placement under the lock; returns what `f` returns.
    fn with_placement<T>(&self, f: impl FnOnce(&mut Placement) -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        let mut p = self.read_placement()?;
        let out = f(&mut p)?;
        p.version = PLACEMENT_VERSION;
        self.write_placement(&p)?;
        Ok(out)
    }

    /// Places `spec`'s user (or finds their seat): the container with the fewest users.
    fn place(&self, spec: &WorkspaceSpec) -> Result<Seat> {
        let pool = self.inner.pool;
        self.with_placement(|p| {
            if let Some(seat) = p.users.get(spec.user.as_str()) {
                if seat.uid != spec.uid || seat.username != spec.username {
                    return Err(Error::Conflict(format!(
                        "user {} is placed in the pool with uid {} ({}), not {} ({})",
                        spec.user, seat.uid, seat.username, spec.uid, spec.username
                    )));
                }
                return Ok(seat.clone());
            }
            let mut counts = vec![0u32; pool.max_containers as usize];
            for s in p.users.values() {
                if let Some(c) = counts.get_mut(s.container as usize) {
                    *c += 1;
                }
            }
            let (n, used) = counts
                .iter()
                .enumerate()
                .min_by_key(|(i, c)| (**c, *i))
                .ok_or_else(|| Error::Internal("the pool has no containers".into()))?;
            if *used >= pool.users_per_container {
                return Err(Error::Exhausted(format!(
                    "the container pool is full: {} containers with {} users each (MAX_CONTAINERS, \
                     USERS_PER_CONTAINER); destroy unused workspaces or raise the limits",
                    pool.max_containers, pool.users_per_container
                )));
            }
            let seat = Seat { container: n as u32, uid: spec.uid, username: spec.username.clone(), running: false };
            p.users.insert(spec.user.to_string(), seat.clone());
            Ok(seat)
        })
    }

    /// Writes container `n`'s `passwd` and `group` from the placement (in place: the files are
    /// bind-mounted, and a rename would leave the container with the old ones).
    fn write_accounts(&self, n: u32) -> Result<PathBuf> {
        let dir = self.inner.run.join(n.to_string());
        mkdir(&dir, 0o711)?;
        let p = self.read_placement()?;
        let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
        let mut group = String::from("root:x:0:\n");
        for s in p.users.values().filter(|s| s.container == n) {
            let home = Self::home_in_container(&s.username);
            passwd.push_str(&format!("{u}:x:{id}:{id}:{u}:{home}:/bin/sh\n", u = s.username, id = s.uid));
            group.push_str(&format!("{u}:x:{id}:\n", u = s.username, id = s.uid));
        }
        passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
        group.push_str("nogroup:x:65534:\n");
        for (name, body) in [("passwd", passwd), ("group", group)] {
            let path = dir.join(name);
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o644)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            f.write_all(body.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(dir)
    }

    fn container_config(&self, n: u32, spec: &WorkspaceSpec, run: &Path) -> ContainerCreateBody {
        let homes = self.inner.homes.join(n.to_string());
        let users = i64::from(self.inner.pool.users_per_container);
        let l = &spec.limits;
        let mut labels = std::collections::HashMap::new();
        labels.insert("warren.pool".to_owned(), self.inner.state_dir.display().to_string());
        labels.insert("warren.pool.index".to_owned(), n.to_string());
        let host = HostConfig {
            binds: Some(vec![
                format!("{}:/workspace:rw", homes.display()),
                format!("{}:/etc/passwd:ro", run.join("passwd").display()),
                format!("{}:/etc/group:ro", run.join("group").display()),
            ]),
            network_mode: Some("none".to_owned()),
            memory: l.memory_bytes.map(|m| m as i64 * users),
            memory_swap: l.memory_bytes.map(|m| m as i64 * users),
            nano_cpus: l.cpu_millis.map(|c| (i64::from(c) * users).min(host_millicores()) * 1_000_000),
            pids_limit: l.pids.map(|p| i64::from(p) * users),
            ulimits: Some(crate::ulimits(l)),
            readonly_rootfs: Some(self.inner.opts.read_only_root),
            tmpfs: Some(crate::tmp_tmpfs(&self.inner.opts.tmp_size)),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            init: Some(true),
            ipc_mode: Some("private".to_owned()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.inner.opts.image.clone()),
            cmd: Some(vec!["sleep".to_owned(), "2147483647".to_owned()]),
            entrypoint: Some(vec![]),
            user: Some("0:0".to_owned()),
            hostname: Some(format!("pool-{n}")),
            working_dir: Some("/".to_owned()),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        }
    }

    /// The host pid of container `n`'s init, if it runs.
    async fn running_pid(&self, n: u32) -> Result<Option<u32>> {
        let name = self.container_name(n);
        match self.inner.docker.inspect_container(&name, None::<InspectContainerOptions>).await {
            Ok(c) => {
                let st = c.state.as_ref();
                let running = st.and_then(|s| s.running).unwrap_or(false);
                Ok(st.and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).filter(|p| running && *p > 0))
            }
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(api_err(&format!("inspecting container {name}"), e)),
        }
    }

    /// Makes container `n` run (creating it if needed, with `/proc` hiding other users'
    /// processes); returns its init's host pid.
    async fn ensure_container(&self, n: u32, spec: &WorkspaceSpec) -> Result<u32> {
        let name = self.container_name(n);
        if let Some(pid) = self.running_pid(n).await? {
            // Adopted (another warren process started it, or this one before a restart): it is
            // used only if its users cannot see each other's processes.
            if processes_hidden(pid).await {
                return Ok(pid);
            }
            tracing::warn!(container = %name, "pool container runs without hidden processes; setting it up again");
            return self.seal(n, pid).await;
        }
        // A container left stopped (daemon restart, warren killed mid-start): start afresh.
        self.remove_container(n).await?;
        let this = self.clone();
        let run = blocking(move || {
            mkdir(&this.inner.homes, 0o711)?;
            mkdir(&this.inner.homes.join(n.to_string()), 0o711)?;
            this.write_accounts(n)
        })
        .await?;
        let config = self.container_config(n, spec, &run);
        let create = CreateContainerOptionsBuilder::default().name(&name).build();
        match self.inner.docker.create_container(Some(create), config).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {} // another warren process created it meanwhile
            Err(e) => {
                let hint = if is_status(&e, 404) {
                    format!(" (is the image {} imported? see `warren image import`)", self.inner.opts.image)
                } else {
                    String::new()
                };
                return Err(api_err(&format!("creating pool container {name}{hint}"), e));
            }
        }
        if let Err(e) = self.inner.docker.start_container(&name, None).await {
            if !is_status(&e, 304) {
                return Err(api_err(&format!("starting pool container {name}"), e));
            }
        }
        let pid = self
            .running_pid(n)
            .await?
            .ok_or_else(|| Error::Internal(format!("pool container {name} is not running after start")))?;
        let pid = self.seal(n, pid).await?;
        tracing::info!(container = %name, "pool container started");
        Ok(pid)
    }

    /// Readies running container `n` (init `pid`) for its users before any of their commands
    /// runs: `/proc` hides each user's processes from the others, `/tmp` is root's and 1777. On
    /// failure the container is removed: a pool container never runs without them.
    async fn seal(&self, n: u32, pid: u32) -> Result<u32> {
        let name = self.container_name(n);
        let sealed = match hide_processes(pid).await {
            Ok(()) => crate::open_tmp(&name, pid).await,
            Err(e) => Err(Error::Internal(format!(
                "pool container {name}: hiding users' processes from each other failed ({e}); \
                 the image needs a `mount` program (busybox or util-linux)"
            ))),
        };
        if let Err(e) = sealed {
            if let Err(rm) = self.remove_container(n).await {
                tracing::error!(container = %name, error = %rm, "removing the pool container that could not be set up");
            }
            return Err(e);
        }
        Ok(pid)
    }

    /// Removes container `n`, running or not (gone already is fine).
    async fn remove_container(&self, n: u32) -> Result<()> {
        let name = self.container_name(n);
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
        match self.inner.docker.remove_container(&name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(api_err(&format!("removing pool container {name}"), e)),
        }
    }

    async fn seat_of(&self, spec: &WorkspaceSpec) -> Result<Seat> {
        let (this, user) = (self.clone(), spec.user.to_string());
        blocking(move || this.seat(&user))
            .await?
            .ok_or_else(|| Error::NotFound(format!("workspace of user {}", spec.user)))
    }

    async fn set_running(&self, spec: &WorkspaceSpec, running: bool) -> Result<()> {
        let (this, user) = (self.clone(), spec.user.to_string());
        blocking(move || {
            this.with_placement(|p| {
                if let Some(s) = p.users.get_mut(&user) {
                    s.running = running;
                }
                Ok(())
            })
        })
        .await
    }

    async fn kill_user(&self, uid: u32) -> Result<()> {
        blocking(move || {
            warren_sys::uidprocs::kill_all(uid)
                .map_err(|e| Error::Internal(format!("killing the processes of uid {uid}: {e}")))
        })
        .await
    }
}

/// Every core of the host, in thousandths (docker refuses a CPU limit above it).
fn host_millicores() -> i64 {
    std::thread::available_parallelism().map_or(1000, |n| n.get() as i64 * 1000)
}

/// Whether the `/proc` of the container whose init is host pid `pid` hides other users'
/// processes (`hidepid=invisible`, shown as `hidepid=2` by older kernels).
async fn processes_hidden(pid: u32) -> bool {
    let mounts = tokio::fs::read_to_string(format!("/proc/{pid}/mounts")).await.unwrap_or_default();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[1] == "/proc"
            && f[2] == "proc"
            && f[3].split(',').any(|o| o == "hidepid=invisible" || o == "hidepid=2")
    })
}

/// Remounts `/proc` of the container whose init is host pid `pid` with `hidepid=invisible`,
/// from the host (the container itself has no capabilities to do it).
async fn hide_processes(pid: u32) -> std::result::Result<(), String> {
    let out = tokio::process::Command::new("nsenter")
        .args([
            "--target",
            &pid.to_string(),
            "--mount",
            "--pid",
            "--",
            "mount",
            "-o",
            "remount,hidepid=invisible",
            "/proc",
        ])
        .output()
        .await
        .map_err(|e| format!("running nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nsenter mount: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[async_trait]
impl Backend for DockerPool {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: BackendKind::Pool,
            isolation: IsolationLevel::Container,
            memory_limit: false,
            cpu_limit: false,
            pids_limit: false,
            network_isolation: true,
            process_isolation: true,
            freeze: false,
            tty: true,
        }
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn create(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        spec.limits.validate()?;
        if spec.network {
            return Err(Error::Unsupported(
                "pooled containers have no network: create the workspace without network, or use the docker backend"
                    .into(),
            ));
        }
        if let Some(image) = spec.image.as_deref().filter(|i| *i != self.inner.opts.image) {
            return Err(Error::Unsupported(format!(
                "pooled containers all run the pool's image {}, not {image}: create the workspace without an image, \
                 or on the docker backend",
                self.inner.opts.image
            )));
        }
        let (this, s) = (self.clone(), spec.clone());
        let seat = blocking(move || {
            let seat = this.place(&s)?;
            mkdir(&this.inner.homes, 0o711)?;
            mkdir(&this.inner.homes.join(seat.container.to_string()), 0o711)?;
            let home = this.home(&seat);
            if !home.is_dir() {
                warren_core::fs::create_private_dir(&home, s.uid, s.gid)?;
            }
            this.write_accounts(seat.container)?;
            Ok(seat)
        })
        .await?;
        tracing::info!(container = seat.container, username = %seat.username, "placed in the pool");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn start(&self, spec: &WorkspaceSpec) -> Result<Status> {
        check_spec(spec)?;
        let seat = self.seat_of(spec).await?;
        let pid = self.ensure_container(seat.container, spec).await?;
        self.set_running(spec, true).await?;
        Ok(Status { state: State::Running, pid: Some(pid) })
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn stop(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        self.seat_of(spec).await?;
        self.set_running(spec, false).await?;
        self.kill_user(spec.uid).await
    }

    async fn status(&self, spec: &WorkspaceSpec) -> Result<Status> {
        let (this, user) = (self.clone(), spec.user.to_string());
        let Some(seat) = blocking(move || this.seat(&user)).await? else {
            return Ok(Status { state: State::Absent, pid: None });
        };
        let home = self.home(&seat);
        if !blocking(move || Ok(home.is_dir())).await? {
            return Ok(Status { state: State::Absent, pid: None });
        }
        match self.running_pid(seat.container).await? {
            Some(pid) if seat.running => Ok(Status { state: State::Running, pid: Some(pid) }),
            _ => Ok(Status { state: State::Stopped, pid: None }),
        }
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn destroy(&self, spec: &WorkspaceSpec) -> Result<()> {
        check_spec(spec)?;
        self.kill_user(spec.uid).await?;
        let (this, user) = (self.clone(), spec.user.to_string());
        blocking(move || {
            let Some(seat) = this.seat(&user)? else { return Ok(()) };
            let home = this.home(&seat);
            match std::fs::remove_dir_all(&home) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", home.display()), e)),
            }
            this.with_placement(|p| {
                p.users.remove(&user);
                Ok(())
            })?;
            this.write_accounts(seat.container).map(drop)
        })
        .await?;
        tracing::info!("removed from the pool");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(workspace = %spec.id))]
    async fn exec_stream(&self, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecHandle> {
        check_spec(spec)?;
        req.validate()?;
        let seat = self.seat_of(spec).await?;
        if !seat.running || self.running_pid(seat.container).await?.is_none() {
            return Err(Error::Conflict(format!("workspace of user {} is stopped; start it first", spec.user)));
        }
        let home = Self::home_in_container(&seat.username);
        let target = Target { container: self.container_name(seat.container), home: home.clone() };
        let mut req = req;
        if !req.env.iter().any(|(k, _)| k == "TMPDIR") {
            req.env.push(("TMPDIR".to_owned(), home));
        }
        start_in(&self.inner.docker, &target, spec, req, async { None }).await
    }

    async fn stats(&self, spec: &WorkspaceSpec) -> Result<Stats> {
        let seat = self.seat_of(spec).await?;
        let (home, uid) = (self.home(&seat), spec.uid);
        blocking(move || {
            let u = warren_sys::uidprocs::usage_of(uid);
            Ok(Stats {
                cpu_usage_ns: u.cpu_ns,
                memory_bytes: u.rss_bytes,
                memory_limit_bytes: None,
                pids: u.threads,
                disk_bytes: warren_core::backend::disk_usage(&home),
            })
        })
        .await
    }

    fn host_files(&self, spec: &WorkspaceSpec) -> Option<HostFiles> {
        let seat = self.seat(spec.user.as_str()).ok()??;
        Some(HostFiles { dir: self.home(&seat), uid: spec.uid, gid: spec.gid })
    }
}
