//! The command a terminal session runs: a login shell in the workspace's home (`bash -l`, or
//! `sh -l` where there is no bash), with `container-info` defined in it.
//!
//! `container-info` needs no file in the workspace and works the same on every backend: the
//! session's environment carries `WARREN_INFO_*` variables (for scripts) and the command's
//! text; the start script hands that text to bash as an exported function
//! (`BASH_FUNC_container-info%%`, which bash imports at start, so subshells have it too), or,
//! for `sh`, writes it to a private temporary rc file that `$ENV` names (read by interactive
//! POSIX shells after the profile).

use warren_core::{ExecRequest, Limits, TtySize};
use warren_engine::WorkspaceInfo;

/// Starts the login shell; `$WARREN_INFO_FN` holds the body of `container-info`.
const START: &str = r#"cd "$HOME" 2>/dev/null
if command -v bash >/dev/null 2>&1; then
    exec env -u WARREN_INFO_FN "BASH_FUNC_container-info%%=() $WARREN_INFO_FN" bash -l
fi
rc=$(mktemp "${TMPDIR:-/tmp}/warren-shrc.XXXXXX") &&
    printf 'container_info() %s\nalias container-info=container_info\n' "$WARREN_INFO_FN" >"$rc" &&
    export ENV="$rc"
unset WARREN_INFO_FN rc
exec sh -l
"#;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size {
            let v = n as f64 / size as f64;
            return if n.is_multiple_of(size) { format!("{} {unit}", n / size) } else { format!("{v:.1} {unit}") };
        }
    }
    format!("{n} B")
}

/// The limits, as `container-info` shows them.
pub fn describe_limits(l: &Limits) -> String {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
    format!(
        "memory {}, cpu {}, processes {}, disk {}, open files {}",
        or_none(l.memory_bytes.map(bytes)),
        or_none(l.cpu_millis.map(|m| format!("{:.2} cores", f64::from(m) / 1000.0))),
        or_none(l.pids.map(|p| p.to_string())),
        or_none(l.disk_bytes.map(bytes)),
        l.nofile
    )
}

fn backend_note(kind: warren_core::BackendKind) -> &'static str {
    match kind {
        warren_core::BackendKind::Ns => "ns (own namespaces, cgroup limits, seccomp)",
        warren_core::BackendKind::Dir => "dir (own uid and home directory; shares the host's view)",
        warren_core::BackendKind::Docker => "docker (a container of its own)",
        warren_core::BackendKind::Pool => "pool (an account in a container shared with other users)",
        warren_core::BackendKind::Auto => "auto",
    }
}

/// The exec request of a session `session` in `ws`, on a terminal of `size` (cols, rows).
pub fn request(ws: &WorkspaceInfo, session: &str, size: (u16, u16)) -> ExecRequest {
    let limits = describe_limits(&ws.limits);
    let network = if ws.network { "on" } else { "loopback only" };
    let lines = [
        format!("user:       {}", ws.user),
        format!("username:   {}", ws.username),
        format!("uid:        {}", ws.uid),
        format!("workspace:  {}", ws.workspace_id),
        format!("backend:    {}", backend_note(ws.backend)),
        format!("limits:     {limits}"),
        format!("network:    {network}"),
        format!("session:    {session}"),
    ];
    let body = format!("{{ printf '%s\\n' {}; }}", lines.iter().map(|l| quote(l)).collect::<Vec<_>>().join(" "));
    let env = vec![
        ("WARREN_INFO_USER".to_owned(), ws.user.to_string()),
        ("WARREN_INFO_USERNAME".to_owned(), ws.username.clone()),
        ("WARREN_INFO_WORKSPACE".to_owned(), ws.workspace_id.to_string()),
        ("WARREN_INFO_BACKEND".to_owned(), ws.backend.to_string()),
        ("WARREN_INFO_LIMITS".to_owned(), limits),
        ("WARREN_INFO_NETWORK".to_owned(), network.to_owned()),
        ("WARREN_TERMINAL_SESSION".to_owned(), session.to_owned()),
        ("WARREN_INFO_FN".to_owned(), body),
        ("COLORTERM".to_owned(), "truecolor".to_owned()),
    ];
    ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), START.into()],
        env,
        cwd: None,
        stdin: None,
        timeout: None,
        tty: Some(TtySize { cols: size.0, rows: size.1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_like_people_write_them() {
        let l = Limits::default();
        assert_eq!(describe_limits(&l), "memory 512 MiB, cpu 1.00 cores, processes 256, disk 2 GiB, open files 1024");
        let none =
            Limits { memory_bytes: None, cpu_millis: Some(1500), pids: None, disk_bytes: Some(1536 << 20), nofile: 64 };
        assert_eq!(
            describe_limits(&none),
            "memory unlimited, cpu 1.50 cores, processes unlimited, disk 1.5 GiB, open files 64"
        );
    }

    #[test]
    fn the_function_body_runs_in_sh_and_bash() {
        let lines = ["it's: \"quoted\" $HOME `x`".to_owned()];
        let body = format!("{{ printf '%s\\n' {}; }}", lines.iter().map(|l| quote(l)).collect::<Vec<_>>().join(" "));
        for shell in ["sh", "bash"] {
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(format!("f() {body}; f"))
                .output()
                .expect("run the shell");
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", lines[0]), "{shell}");
        }
    }
}
