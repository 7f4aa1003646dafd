//! Builds a workspace's root filesystem inside a fresh mount namespace, then pivots into it.
//!
//! Layout (all on a private tmpfs root that ends read-only):
//!
//! | path | what |
//! | --- | --- |
//! | `/usr`, `/bin`, `/sbin`, `/lib*` | host directories bound read-only, `nosuid,nodev` (symlinks copied as symlinks) |
//! | `/etc` | generated `passwd`, `group`, `hostname`, `hosts`, `resolv.conf`, `nsswitch.conf`; a short allow-list of host files bound read-only (dynamic loader cache, alternatives, certificates, terminfo, shell profiles) |
//! | `/home/<user>` | the workspace, read-write, `nosuid,nodev` |
//! | `/tmp` | tmpfs, 1777, size-limited, `nosuid,nodev` (`/var/tmp` links to it) |
//! | `/proc` | fresh procfs for the workspace's pid namespace, `nosuid,nodev,noexec`; `kcore`, `keys`, `timer_list`, `sched_debug`, `latency_stats`, `acpi`, `scsi` masked; `bus`, `fs`, `irq`, `sys`, `sysrq-trigger` read-only |
//! | `/dev` | tmpfs with `null`, `zero`, `full`, `random`, `urandom`, `tty`; a private devpts instance; `/dev/shm` |
//!
//! `/sys` is not mounted. The old root is detached after `pivot_root`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::proto::InitConfig;

type R<T> = std::result::Result<T, String>;

fn m(src: Option<&Path>, dst: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> R<()> {
    mount(src, dst, fstype, flags, data).map_err(|e| {
        format!("mounting {} on {}: {e}", src.map_or("-".into(), |s| s.display().to_string()), dst.display())
    })
}

fn bind(src: &Path, dst: &Path, read_only: bool, extra: MsFlags) -> R<()> {
    m(Some(src), dst, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    m(None, dst, None, flags, None)
}

fn mkdir(p: &Path, mode: u32) -> R<()> {
    fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| format!("chmod {}: {e}", p.display()))
}

fn touch(p: &Path) -> R<()> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map(drop)
        .map_err(|e| format!("creating {}: {e}", p.display()))
}

fn write(p: &Path, s: &str) -> R<()> {
    fs::write(p, s).map_err(|e| format!("writing {}: {e}", p.display()))
}

/// Mirrors a host path into the new root: symlinks as symlinks, directories and files as
/// read-only binds. Missing host paths are skipped.
fn mirror(host: &Path, root: &Path, rel: &str) -> R<()> {
    let Ok(md) = fs::symlink_metadata(host) else { return Ok(()) };
    let dst = root.join(rel);
    if md.file_type().is_symlink() {
        let target = fs::read_link(host).map_err(|e| format!("reading link {}: {e}", host.display()))?;
        symlink(&target, &dst).map_err(|e| format!("linking {}: {e}", dst.display()))
    } else if md.is_dir() {
        mkdir(&dst, 0o755)?;
        bind(host, &dst, true, MsFlags::empty())
    } else {
        touch(&dst)?;
        bind(host, &dst, true, MsFlags::empty())
    }
}

const HOST_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
const HOST_ETC: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "ssl",
    "ca-certificates",
    "terminfo",
    "profile",
    "profile.d",
    "bash.bashrc",
    "inputrc",
    "mime.types",
    "os-release",
    "debian_version",
    "python3",
    "python3.11",
    "perl",
    "gitconfig",
];
const PROC_MASK_FILES: &[&str] = &["kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug"];
const PROC_MASK_DIRS: &[&str] = &["acpi", "scsi"];
const PROC_READ_ONLY: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the root and pivots into it. Runs as root in fresh mount and pid namespaces (we are
/// pid 1 of the latter). On return the process's root is the workspace's and cwd is `/`.
pub fn build_and_pivot(cfg: &InitConfig) -> R<()> {
    m(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    let root = cfg.run_dir.join("root");
    if !cfg.userns {
        // With a user namespace the helper made it (as host root) before entering the namespace.
        mkdir(&root, 0o700)?;
    }
    m(
        Some(Path::new("tmpfs")),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=4m"),
    )?;

    // The programs: the host's, or an imported image's.
    let base = cfg.image.as_deref().unwrap_or(Path::new("/"));
    for d in HOST_DIRS {
        mirror(&base.join(d), &root, d)?;
    }

    // /etc
    let etc = root.join("etc");
    mkdir(&etc, 0o755)?;
    let shell =
        if base.join("bin/bash").exists() || base.join("usr/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
    let home = format!("/home/{}", cfg.username);
    write(
        &etc.join("passwd"),
        &format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n{u}:x:{uid}:{gid}:warren workspace {ws}:{home}:{shell}\n",
            u = cfg.username,
            uid = cfg.uid,
            gid = cfg.gid,
            ws = cfg.workspace,
        ),
    )?;
    write(&etc.join("group"), &format!("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n{}:x:{}:\n", cfg.username, cfg.gid))?;
    write(&etc.join("hostname"), &format!("{}\n", hostname(cfg)))?;
    write(&etc.join("hosts"), &format!("127.0.0.1\tlocalhost {h}\n::1\tlocalhost {h}\n", h = hostname(cfg)))?;
    write(&etc.join("nsswitch.conf"), "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")?;
    let resolv = if cfg.network { fs::read_to_string("/etc/resolv.conf").unwrap_or_default() } else { String::new() };
    write(&etc.join("resolv.conf"), &resolv)?;
    for e in HOST_ETC {
        mirror(&base.join("etc").join(e), &root, &format!("etc/{e}"))?;
    }

    // /home/<user>
    let home_dir = root.join(home.trim_start_matches('/'));
    mkdir(&home_dir, 0o755)?;
    bind(&cfg.home, &home_dir, false, MsFlags::empty())?;

    // /tmp, /var/tmp, /run
    let tmp = root.join("tmp");
    mkdir(&tmp, 0o1777)?;
    m(
        Some(Path::new("tmpfs")),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("mode=1777,size={}", cfg.tmp_bytes)),
    )?;
    mkdir(&root.join("var"), 0o755)?;
    symlink("../tmp", root.join("var/tmp")).map_err(|e| format!("linking /var/tmp: {e}"))?;
    mkdir(&root.join("run"), 0o755)?;
    mkdir(&root.join("root"), 0o700)?;

    // /dev
    let dev = root.join("dev");
    mkdir(&dev, 0o755)?;
    m(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    for d in DEVICES {
        let p = dev.join(d);
        touch(&p)?;
        m(Some(&Path::new("/dev").join(d)), &p, None, MsFlags::MS_BIND, None)?;
    }
    mkdir(&dev.join("pts"), 0o755)?;
    m(
        Some(Path::new("devpts")),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        // In a user namespace gid 5 (tty) is not mapped: terminals then belong to the user's group.
        Some(if cfg.userns {
            "newinstance,ptmxmode=0666,mode=0620"
        } else {
            "newinstance,ptmxmode=0666,mode=0620,gid=5"
        }),
    )?;
    symlink("pts/ptmx", dev.join("ptmx")).map_err(|e| format!("linking /dev/ptmx: {e}"))?;
    mkdir(&dev.join("shm"), 0o1777)?;
    m(
        Some(Path::new("tmpfs")),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=64m"),
    )?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| format!("linking /dev/{name}: {e}"))?;
    }

    // /proc, with the sensitive parts masked
    let proc_dir = root.join("proc");
    mkdir(&proc_dir, 0o555)?;
    m(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for f in PROC_MASK_FILES {
        let p = proc_dir.join(f);
        if p.exists() {
            m(Some(&dev.join("null")), &p, None, MsFlags::MS_BIND, None)?;
        }
    }
    for d in PROC_MASK_DIRS {
        let p = proc_dir.join(d);
        if p.exists() {
            m(
                Some(Path::new("tmpfs")),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0555,size=4k"),
            )?;
        }
    }
    for r in PROC_READ_ONLY {
        let p = proc_dir.join(r);
        if p.exists() {
            bind(&p, &p, true, MsFlags::MS_NOEXEC)?;
        }
    }
    // /dev is complete: make it read-only.
    m(
        None,
        &dev,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;

    // pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops it.
    nix::unistd::chdir(&root).map_err(|e| format!("entering the new root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    m(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    Ok(())
}

/// The workspace's hostname.
pub fn hostname(cfg: &InitConfig) -> String {
    let mut h: String =
        cfg.username.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    h.truncate(63);
    h
}
