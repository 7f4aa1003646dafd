//! The peers: the same `echo hi` through other isolation tools, each timed as a whole command.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One peer, ready to run or not available.
pub struct Peer {
    /// Row name.
    pub name: &'static str,
    /// The command line, for the report.
    pub command: String,
    /// First line of the tool's `--version`, when installed.
    pub version: Option<String>,
    /// The argv of iteration `i`, or why the peer cannot run.
    pub argv: Result<Box<dyn Fn(usize) -> Vec<OsString>>, Unavailable>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("name", &self.name).field("command", &self.command).finish_non_exhaustive()
    }
}

/// Why a row has no numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// A tool or service is missing on this host: not a failure.
    Skipped(String),
    /// It should have worked and did not.
    Error(String),
}

/// Peer names, in table order.
pub const BARE: &str = "bare /bin/echo";
/// `unshare` of five namespaces.
pub const UNSHARE: &str = "unshare";
/// bubblewrap with everything unshared.
pub const BWRAP: &str = "bwrap";
/// `runc run` of a busybox bundle.
pub const RUNC: &str = "runc run";
/// `docker run --rm` of a busybox image.
pub const DOCKER: &str = "docker run";
/// `docker exec` in a running container of a busybox image.
pub const DOCKER_EXEC: &str = "docker exec";

/// Scratch files of the peers (the busybox bundle, the docker image), removed on drop.
#[derive(Debug)]
pub struct PeerFiles {
    dir: tempfile::TempDir,
    docker_image: Option<String>,
    /// Images and containers made for the docker rows, removed on drop.
    docker_extra: Vec<(&'static str, String)>,
}

impl PeerFiles {
    /// A scratch directory for bundles.
    pub fn new() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("warren-bench-peers-")
            .tempdir()
            .map_err(|e| format!("creating a scratch directory for the peers: {e}"))?;
        Ok(Self { dir, docker_image: None, docker_extra: Vec::new() })
    }
}

impl Drop for PeerFiles {
    fn drop(&mut self) {
        for (what, name) in self.docker_extra.iter().rev() {
            let cmd: &[&str] = if *what == "container" { &["rm", "--force"] } else { &["rmi", "--force"] };
            let _ = Command::new("docker").args(cmd).arg(name).output();
        }
        if let Some(image) = &self.docker_image {
            let _ = Command::new("docker").args(["rmi", "--force", image]).output();
        }
    }
}

/// Finds `prog` in `PATH` (plus the sbin directories, where runc lives).
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// First line of `prog ARGS`' output (stdout, else stderr).
fn version_of(prog: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).stdin(Stdio::null()).output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty())
}

/// Runs `argv` once, checks it printed exactly `hi`, and returns its wall time.
pub fn run_once(argv: &[OsString]) -> Result<Duration, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let started = Instant::now();
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("starting {}: {e}", prog.to_string_lossy()))?;
    let took = started.elapsed();
    if !out.status.success() || out.stdout != b"hi\n" {
        return Err(format!(
            "`{}` ended with {}; stdout {:?}, stderr {:?}",
            show(argv),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(took)
}

/// A command line for humans.
pub fn show(argv: &[OsString]) -> String {
    argv.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

fn strs(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn fixed(name: &'static str, prog: &str, args: &[&str], version_args: &[&str]) -> Peer {
    let command = std::iter::once(prog).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let Some(path) = which(prog) else {
        return Peer {
            name,
            command,
            version: None,
            argv: Err(Unavailable::Skipped(format!("not installed ({prog} not found in PATH)"))),
        };
    };
    let mut argv = vec![path.clone().into_os_string()];
    argv.extend(strs(args));
    Peer { name, command, version: version_of(&path, version_args), argv: Ok(Box::new(move |_| argv.clone())) }
}

/// `/bin/echo hi`: the floor, a plain fork + exec.
pub fn bare() -> Peer {
    fixed(BARE, "/bin/echo", &["hi"], &["--version"])
}

/// Five new namespaces (pid, mount, net, uts, ipc) and a fork, no new root.
pub fn unshare() -> Peer {
    fixed(
        UNSHARE,
        "unshare",
        &["--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "/bin/echo", "hi"],
        &["--version"],
    )
}

/// bubblewrap: all namespaces, a fresh root with the host's /usr read-only, /proc and /dev.
pub fn bwrap() -> Peer {
    fixed(
        BWRAP,
        "bwrap",
        &[
            "--unshare-all",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "/bin/echo",
            "hi",
        ],
        &["--version"],
    )
}

/// Whether the ELF file at `p` asks for a dynamic loader (has a PT_INTERP program header).
fn is_dynamic(p: &Path) -> Result<bool, String> {
    let b = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
    if b.get(..5) != Some(b"\x7fELF\x02") {
        return Err(format!("{} is not a 64-bit ELF file", p.display()));
    }
    let bad = || format!("{} has a truncated ELF header", p.display());
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(bad)?).map_err(|_| bad())?;
    let (phentsize, phnum) = (u16_at(0x36).ok_or_else(bad)?, u16_at(0x38).ok_or_else(bad)?);
    const PT_INTERP: u32 = 3;
    Ok((0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])) == Some(PT_INTERP)
    }))
}

/// A minimal root filesystem: a static busybox as /bin/busybox, /bin/echo and /bin/sh.
fn busybox_rootfs(files: &PeerFiles) -> Result<PathBuf, Unavailable> {
    let rootfs = files.dir.path().join("bundle/rootfs");
    if rootfs.join("bin/busybox").is_file() {
        return Ok(rootfs);
    }
    let busybox = which("busybox")
        .ok_or_else(|| Unavailable::Skipped("not installed (busybox-static is needed for the rootfs)".into()))?;
    if is_dynamic(&busybox).map_err(Unavailable::Error)? {
        return Err(Unavailable::Skipped(format!(
            "{} is dynamically linked: install busybox-static for the rootfs",
            busybox.display()
        )));
    }
    let err = |what: &str, e: std::io::Error| Unavailable::Error(format!("{what}: {e}"));
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| err("creating the rootfs", e))?;
    std::fs::copy(&busybox, bin.join("busybox")).map_err(|e| err("copying busybox", e))?;
    // sleep: the docker rows keep a container alive with it.
    for name in ["echo", "sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(name)).map_err(|e| err("linking busybox", e))?;
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(|e| err("creating the rootfs", e))?;
    }
    Ok(rootfs)
}

fn check(what: &str, cmd: &mut Command) -> Result<Vec<u8>, Unavailable> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| Unavailable::Error(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(Unavailable::Error(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// `runc run` of a busybox bundle made with `runc spec` (root, not rootless: it has its own
/// pid, network, ipc, uts and mount namespaces and a read-only root), deleted after each run.
pub fn runc(files: &PeerFiles) -> Peer {
    let command = "runc run --bundle <busybox bundle> <id>  (process /bin/echo hi)".to_owned();
    let Some(runc) = which("runc") else {
        return Peer { name: RUNC, command, version: None, argv: Err(Unavailable::Skipped("not installed".into())) };
    };
    let version = version_of(&runc, &["--version"]);
    let prepare = || -> Result<Box<dyn Fn(usize) -> Vec<OsString>>, Unavailable> {
        let rootfs = busybox_rootfs(files)?;
        let bundle = rootfs.parent().map(Path::to_path_buf).unwrap_or_default();
        let config = bundle.join("config.json");
        let _ = std::fs::remove_file(&config);
        check("runc spec", Command::new(&runc).arg("spec").arg("--bundle").arg(&bundle))?;
        let text =
            std::fs::read(&config).map_err(|e| Unavailable::Error(format!("reading {}: {e}", config.display())))?;
        let mut spec: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| Unavailable::Error(format!("parsing runc's spec: {e}")))?;
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = serde_json::json!(["/bin/echo", "hi"]);
        let text = serde_json::to_vec_pretty(&spec).map_err(|e| Unavailable::Error(e.to_string()))?;
        std::fs::write(&config, text).map_err(|e| Unavailable::Error(format!("writing {}: {e}", config.display())))?;
        let state = files.dir.path().join("runc-state");
        let pid = std::process::id();
        let runc = runc.clone();
        Ok(Box::new(move |i| {
            let mut v = vec![runc.clone().into_os_string(), "--root".into(), state.clone().into_os_string()];
            v.extend(["run".into(), "--bundle".into(), bundle.clone().into_os_string()]);
            v.push(format!("warren-bench-{pid}-{i}").into());
            v
        }))
    };
    Peer { name: RUNC, command, version, argv: prepare() }
}

/// `docker run --rm --network none` of an image imported from the same busybox rootfs.
pub fn docker(files: &mut PeerFiles) -> Peer {
    let command = "docker run --rm --network none <busybox image> /bin/echo hi".to_owned();
    let Some(docker) = which("docker") else {
        return Peer { name: DOCKER, command, version: None, argv: Err(Unavailable::Skipped("not installed".into())) };
    };
    let mut version = version_of(&docker, &["--version"]);
    let info = Command::new(&docker).args(["info", "--format", "{{.ServerVersion}}"]).stdin(Stdio::null()).output();
    if let Ok(o) = info.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()) {
        if !o.is_empty() {
            version = Some(format!("{}; dockerd {o}", version.unwrap_or_default()));
        }
    }
    if !info.as_ref().is_ok_and(|o| o.status.success()) {
        let why = "dockerd not running (scripts/install-deps --docker installs and starts it)";
        return Peer { name: DOCKER, command, version, argv: Err(Unavailable::Skipped(why.into())) };
    }
    let mut prepare = || -> Result<Box<dyn Fn(usize) -> Vec<OsString>>, Unavailable> {
        let rootfs = busybox_rootfs(files)?;
        let tar = files.dir.path().join("rootfs.tar");
        check("packing the rootfs", Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."))?;
        let image = format!("warren-bench-busybox:{}", std::process::id());
        check("docker import", Command::new(&docker).arg("import").arg(&tar).arg(&image))?;
        files.docker_image = Some(image.clone());
        let docker = docker.clone();
        Ok(Box::new(move |_| {
            let mut v = vec![docker.clone().into_os_string()];
            v.extend(strs(&["run", "--rm", "--network", "none", &image, "/bin/echo", "hi"]));
            v
        }))
    };
    let argv = prepare();
    Peer { name: DOCKER, command, version, argv }
}

/// The busybox rootfs, for the docker backend's rows to import as their image (`name`, removed on drop).
pub fn docker_backend_rootfs(files: &mut PeerFiles, name: &str) -> Result<PathBuf, Unavailable> {
    let rootfs = busybox_rootfs(files)?;
    files.docker_extra.push(("image", name.to_owned()));
    Ok(rootfs)
}

/// `docker exec` of `/bin/echo hi` in a container of the busybox image started once (untimed).
pub fn docker_exec(files: &mut PeerFiles) -> Peer {
    let command = "docker exec <running busybox container> /bin/echo hi".to_owned();
    let base = docker(files);
    if let Err(e) = base.argv {
        return Peer { name: DOCKER_EXEC, command, version: base.version, argv: Err(e) };
    }
    let (Some(docker), Some(image)) = (which("docker"), files.docker_image.clone()) else {
        return Peer {
            name: DOCKER_EXEC,
            command,
            version: base.version,
            argv: Err(Unavailable::Skipped("no image".into())),
        };
    };
    let name = format!("warren-bench-exec-{}", std::process::id());
    files.docker_extra.push(("container", name.clone()));
    let started = check(
        "docker run -d",
        Command::new(&docker).args(["run", "-d", "--network", "none", "--name", &name, &image, "sleep", "100000"]),
    );
    if let Err(e) = started {
        return Peer { name: DOCKER_EXEC, command, version: base.version, argv: Err(e) };
    }
    let argv: Box<dyn Fn(usize) -> Vec<OsString>> = Box::new(move |_| {
        let mut v = vec![docker.clone().into_os_string()];
        v.extend(strs(&["exec", &name, "/bin/echo", "hi"]));
        v
    });
    Peer { name: DOCKER_EXEC, command, version: base.version, argv: Ok(argv) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bare_peer_runs_and_checks_its_output() {
        let p = bare();
        let argv = p.argv.as_ref().map(|f| f(0)).expect("/bin/echo exists");
        assert!(run_once(&argv).is_ok());
        let wrong = strs(&["/bin/echo", "ho"]);
        let err = run_once(&wrong).expect_err("output is checked");
        assert!(err.contains("\"ho\\n\""), "{err}");
    }

    #[test]
    fn missing_tools_are_skipped_not_dropped() {
        let p = fixed("nope", "warren-bench-no-such-tool", &[], &[]);
        assert!(matches!(p.argv, Err(Unavailable::Skipped(ref m)) if m.contains("not installed")));
    }

    #[test]
    fn elf_interpreter_is_detected() {
        // /bin/echo from coreutils is dynamically linked on Debian.
        assert_eq!(is_dynamic(Path::new("/bin/echo")), Ok(true));
        let not_elf = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(not_elf.path(), b"#!/bin/sh\n").expect("write");
        assert!(is_dynamic(not_elf.path()).is_err());
    }
}
