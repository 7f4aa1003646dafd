//! The seccomp deny-list every workspace process runs under.
//!
//! Default allow; denied with `EPERM`: kernel keyrings, bpf, perf events, userfaultfd, every
//! mount API call, `pivot_root`, namespace creation and joining (`unshare`, `setns`, `clone` with
//! a `CLONE_NEW*` flag), `open_by_handle_at` (the "shocker" escape), kexec and kernel modules,
//! reboot, swap, accounting, quotas, the kernel log, I/O port access, io_uring, clock setting,
//! and the terminal-injection ioctls `TIOCSTI` and `TIOCLINUX` (CVE-2017-5226).
//! `clone3` answers `ENOSYS`, so libc falls back to `clone`, whose flags the filter can inspect
//! (a `clone3` flags word sits behind a pointer the filter cannot read).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::{Result, SysError};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Syscalls denied outright.
pub const DENIED: &[(&str, i64)] = &[
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
];

/// `ioctl` requests denied (argument 1).
pub const DENIED_IOCTLS: &[(&str, u64)] = &[("TIOCSTI", libc::TIOCSTI), ("TIOCLINUX", libc::TIOCLINUX)];

/// Namespace flags `clone` may not carry.
const CLONE_NS_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

fn err(e: impl std::fmt::Display) -> SysError {
    SysError::Invalid(format!("building the seccomp filter: {e}"))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule> {
    let c = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(err)?;
    SeccompRule::new(vec![c]).map_err(err)
}

/// The compiled filters, in the order they are installed.
#[derive(Debug, Clone)]
pub struct Filters {
    deny: BpfProgram,
    clone3: BpfProgram,
}

/// Compiles the deny-list. Cheap enough to do per workspace start; compile once if it matters.
pub fn compile() -> Result<Filters> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, vec![]);
    }
    let ioctl_rules =
        DENIED_IOCTLS.iter().map(|(_, req)| cond(1, SeccompCmpOp::Eq, *req)).collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|f| cond(0, SeccompCmpOp::MaskedEq(*f as u64), *f as u64))
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), ARCH).map_err(err)?;
    let mut c3 = BTreeMap::new();
    c3.insert(libc::SYS_clone3, vec![]);
    let clone3 =
        SeccompFilter::new(c3, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), ARCH).map_err(err)?;
    Ok(Filters { deny: deny.try_into().map_err(err)?, clone3: clone3.try_into().map_err(err)? })
}

/// Installs the filters on the calling thread (and so on everything it later forks or execs).
/// `no_new_privs` must already be set, or the caller must hold `CAP_SYS_ADMIN`.
pub fn install(f: &Filters) -> Result<()> {
    seccompiler::apply_filter(&f.deny).map_err(|e| SysError::Invalid(format!("installing the seccomp filter: {e}")))?;
    seccompiler::apply_filter(&f.clone3)
        .map_err(|e| SysError::Invalid(format!("installing the seccomp filter: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles() {
        let f = compile().expect("filter compiles");
        assert!(f.deny.len() > DENIED.len());
    }
}
