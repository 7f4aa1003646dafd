//! Dropping privileges for good: capabilities (bounding, ambient, permitted, effective,
//! inheritable), `no_new_privs`, supplementary groups, uid and gid, and dumpability.

use nix::errno::Errno;
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use crate::{Result, SysError};

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(63)
}

fn prctl(op: libc::c_int, a: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    let r = unsafe { libc::prctl(op, a, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        return Err(SysError::errno(what.to_owned(), Errno::last()));
    }
    Ok(())
}

/// Becomes `uid`/`gid` with no supplementary groups and no capabilities of any kind, with
/// `no_new_privs` set (setuid binaries and file capabilities grant nothing after this).
pub fn drop_to(uid: u32, gid: u32) -> Result<()> {
    for cap in 0..=last_cap() {
        match prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, "dropping the capability bounding set") {
            Ok(()) => {}
            Err(SysError::Errno { errno: Errno::EINVAL, .. }) => break,
            Err(e) => return Err(e),
        }
    }
    prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, "clearing ambient capabilities")?;
    setgroups(&[Gid::from_raw(gid)]).map_err(|e| SysError::errno("setting supplementary groups", e))?;
    setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
        .map_err(|e| SysError::errno(format!("setresgid({gid})"), e))?;
    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
        .map_err(|e| SysError::errno(format!("setresuid({uid})"), e))?;
    clear_caps()?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")?;
    Ok(())
}

/// Clears permitted, effective and inheritable capability sets.
pub fn clear_caps() -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads a v3 header and two data structs, which is exactly what we pass;
    // both live for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if r != 0 {
        return Err(SysError::errno("clearing capabilities", Errno::last()));
    }
    Ok(())
}

/// Marks the process non-dumpable: other processes of the same uid cannot ptrace it or open
/// its `/proc/<pid>/{fd,exe,root,mem,environ}`.
pub fn set_non_dumpable() -> Result<()> {
    prctl(libc::PR_SET_DUMPABLE, 0, "making the process non-dumpable")
}

/// Reads this process's capability sets from `/proc/self/status` (for tests and diagnostics).
pub fn current() -> Vec<(String, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}
