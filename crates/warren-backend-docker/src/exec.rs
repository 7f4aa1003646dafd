//! Exec through the exec API: create, start attached (a demultiplexed stream, or a tty), stdin
//! through the attached connection (half-closed when the caller drops its sender), exit code
//! from exec inspect, signals and kill-on-drop to the command's process group on the host.

use bollard::container::LogOutput;
use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::Docker;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use warren_core::{
    Error, ExecControl, ExecEvent, ExecHandle, ExecRequest, ExitStatus, Result, WorkspacePath, WorkspaceSpec,
};

use crate::{api_err, is_status, DockerBackend};

/// Wraps a tty command so the terminal has its size before the command starts (the exec API of
/// Engine 1.41 has no initial console size; a resize after start would race the command).
const TTY_WRAPPER: &str = "r=$1 c=$2; shift 2; stty rows \"$r\" cols \"$c\" 2>/dev/null; exec \"$@\"";

fn workdir(home: &str, cwd: Option<&str>) -> Result<String> {
    let home = home.to_owned();
    match cwd {
        None => Ok(home),
        Some(c) if c.is_empty() || c == "." => Ok(home),
        Some(c) => {
            let p = WorkspacePath::new(c)?;
            if p.is_root() {
                Ok(home)
            } else {
                Ok(format!("{home}/{p}"))
            }
        }
    }
}

pub(crate) async fn start(b: &DockerBackend, spec: &WorkspaceSpec, req: ExecRequest) -> Result<ExecHandle> {
    let target =
        Target { container: DockerBackend::container_name(spec), home: DockerBackend::home_in_container(spec) };
    start_in(b.docker(), &target, spec, req, async {
        // No container (never started, stopped) or not running: Conflict if the workspace
        // exists, else NotFound.
        b.require_running(spec).await.err()
    })
    .await
}

/// Where a command runs: a container, and the home directory in it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The container's name.
    pub container: String,
    /// The workspace's home inside it.
    pub home: String,
}

/// Starts `req` as the workspace's uid in `target`. `missing` is awaited only when the daemon
/// says there is no such (running) container, to tell the caller why.
pub(crate) async fn start_in(
    docker: &Docker,
    target: &Target,
    spec: &WorkspaceSpec,
    req: ExecRequest,
    missing: impl std::future::Future<Output = Option<Error>>,
) -> Result<ExecHandle> {
    let docker = docker.clone();
    let name = target.container.clone();
    let home = target.home.clone();
    let dir = workdir(&home, req.cwd.as_deref())?;
    let tty = req.tty;
    let cmd = match tty {
        Some(size) => {
            let mut v = vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                TTY_WRAPPER.to_owned(),
                "warren-tty".to_owned(),
                size.rows.to_string(),
                size.cols.to_string(),
            ];
            v.extend(req.argv.iter().cloned());
            v
        }
        None => req.argv.clone(),
    };
    let config = ExecConfig {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(tty.is_some()),
        env: Some(req.environment(spec, &home).into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: Some(cmd),
        user: Some(format!("{}:{}", spec.uid, spec.gid)),
        working_dir: Some(dir),
        ..Default::default()
    };
    let created = match docker.create_exec(&name, config).await {
        Ok(c) => c,
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => {
            return Err(match missing.await {
                None => api_err(&format!("starting a command in container {name}"), e),
                Some(e) => e,
            });
        }
        Err(e) => return Err(api_err(&format!("starting a command in container {name}"), e)),
    };
    let id = created.id;
    let opts = StartExecOptions { detach: false, tty: tty.is_some(), output_capacity: Some(64 << 10) };
    let started = docker
        .start_exec(&id, Some(opts))
        .await
        .map_err(|e| api_err(&format!("starting {:?} in container {name}", req.argv[0]), e))?;
    let StartExecResults::Attached { mut output, mut input } = started else {
        return Err(Error::Internal("the docker daemon started an attached exec detached".into()));
    };
    if let Some(size) = tty {
        let _ = docker.resize_exec(&id, ResizeExecOptions { height: size.rows, width: size.cols }).await;
    }

    let (ev_tx, ev_rx) = mpsc::channel::<ExecEvent>(64);
    let (in_tx, mut in_rx) = mpsc::channel::<Vec<u8>>(16);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ExecControl>(8);
    let program = req.argv[0].clone();

    // Stdin: forward, then half-close the connection so the command sees EOF.
    tokio::spawn(async move {
        while let Some(chunk) = in_rx.recv().await {
            if input.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = input.shutdown().await;
    });

    // Control: resize and signals.
    {
        let (docker, id) = (docker.clone(), id.clone());
        tokio::spawn(async move {
            while let Some(c) = ctl_rx.recv().await {
                match c {
                    ExecControl::Resize(size) => {
                        let opts = ResizeExecOptions { height: size.rows, width: size.cols };
                        if let Err(e) = docker.resize_exec(&id, opts).await {
                            tracing::debug!(exec = %id, "resizing the terminal failed: {e}");
                        }
                    }
                    ExecControl::Signal(sig) => signal_exec(&docker, &id, sig).await,
                }
            }
        });
    }

    // Output, then the exit status; kill when the caller goes away first.
    tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        keep_head(&mut seen, &message);
                        if ev_tx.send(ExecEvent::Stdout(message.to_vec())).await.is_err() {
                            signal_exec(&docker, &id, 9).await;
                            return;
                        }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        keep_head(&mut seen, &message);
                        if ev_tx.send(ExecEvent::Stderr(message.to_vec())).await.is_err() {
                            signal_exec(&docker, &id, 9).await;
                            return;
                        }
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => {
                        tracing::debug!(exec = %id, "the exec output stream failed: {e}");
                        break;
                    }
                    None => break,
                },
                _ = ev_tx.closed() => {
                    signal_exec(&docker, &id, 9).await;
                    return;
                }
            }
        }
        let status = tokio::select! {
            st = wait_exit(&docker, &id) => st,
            _ = ev_tx.closed() => {
                signal_exec(&docker, &id, 9).await;
                return;
            }
        };
        let status = match status {
            Ok(st) => st,
            Err(e) => {
                tracing::warn!(exec = %id, "reading the exit status failed: {e}");
                ExitStatus { code: -1, signal: None }
            }
        };
        // The runtime could not start the program: say so like a shell would (127).
        let text = String::from_utf8_lossy(&seen);
        let status = if status.code == 126 && text.contains("executable file not found") {
            let _ = ev_tx.send(ExecEvent::Stderr(format!("{program}: command not found\n").into_bytes())).await;
            ExitStatus { code: 127, signal: None }
        } else {
            status
        };
        let _ = ev_tx.send(ExecEvent::Exit(status)).await;
    });

    Ok(ExecHandle { stdin: Some(in_tx), events: ev_rx, control: ctl_tx })
}

/// Keeps the first few KiB of output (to recognise the runtime's own error messages).
fn keep_head(seen: &mut Vec<u8>, b: &[u8]) {
    let room = 4096usize.saturating_sub(seen.len());
    seen.extend_from_slice(&b[..b.len().min(room)]);
}

/// Polls exec inspect until the command has ended.
async fn wait_exit(docker: &Docker, id: &str) -> Result<ExitStatus> {
    let mut delay = std::time::Duration::from_millis(2);
    loop {
        let info = docker.inspect_exec(id).await.map_err(|e| api_err(&format!("inspecting exec {id}"), e))?;
        if info.running != Some(true) {
            let code = info.exit_code.unwrap_or(-1) as i32;
            let signal = (129..=192).contains(&code).then_some(code - 128);
            return Ok(ExitStatus { code, signal });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(100));
    }
}

/// Sends `sig` to the exec's process group (docker makes every exec a session leader; its host
/// pid comes from exec inspect), if it still runs.
async fn signal_exec(docker: &Docker, id: &str, sig: i32) {
    let Ok(sig) = Signal::try_from(sig) else {
        tracing::warn!(exec = %id, "not a signal: {sig}");
        return;
    };
    // Right after start the pid may not be known yet: ask a few times.
    for _ in 0..50 {
        match docker.inspect_exec(id).await {
            Ok(info) if info.running == Some(true) => {
                if let Some(pid) = info.pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
                    if kill(Pid::from_raw(-pid), sig).is_err() {
                        let _ = kill(Pid::from_raw(pid), sig);
                    }
                    return;
                }
            }
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(exec = %id, "inspecting the exec to signal it failed: {e}");
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
