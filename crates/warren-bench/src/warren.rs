//! Warren's own rows: the backends driven through the `Backend` trait with hand-built specs
//! (backend cost only: no engine, no store).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_core::{Backend, ExecOutput, ExecRequest, UserId, WorkspaceSpec};

/// Longest any one backend call may take before the row is abandoned.
const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// Samples of one warren row, with per-step samples for cold cycles.
#[derive(Debug, Default)]
pub struct Samples {
    /// Whole-iteration wall times.
    pub total: Vec<Duration>,
    /// Wall times of each step (`create`, `start`, `exec`, `destroy`), cold cycles only.
    pub steps: BTreeMap<&'static str, Vec<Duration>>,
}

/// A spec for bench user `user` running as `uid`, with a fresh workspace id.
pub fn spec(user: &str, uid: u32) -> Result<WorkspaceSpec, String> {
    Ok(WorkspaceSpec::new(UserId::new(user).map_err(|e| e.to_string())?, uid))
}

fn echo() -> ExecRequest {
    ExecRequest { timeout: Some(Duration::from_secs(30)), ..ExecRequest::new(["/bin/echo", "hi"]) }
}

async fn step<T>(what: &str, f: impl Future<Output = warren_core::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(_) => Err(format!("{what} did not finish within {}s", OP_TIMEOUT.as_secs())),
    }
}

fn check_output(out: &ExecOutput) -> Result<(), String> {
    if out.exit_code != 0 || out.stdout != b"hi\n" {
        return Err(format!(
            "exec of /bin/echo hi ended with code {} (signal {:?}); stdout {:?}, stderr {:?}",
            out.exit_code,
            out.signal,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Best-effort cleanup after a failed iteration.
async fn cleanup(b: &dyn Backend, spec: &WorkspaceSpec) {
    let _ = tokio::time::timeout(OP_TIMEOUT, b.destroy(spec)).await;
}

/// create + start + exec `/bin/echo hi` + destroy, each iteration on a fresh workspace.
pub async fn cold_cycle(
    b: Arc<dyn Backend>,
    user: &str,
    uid: u32,
    warmup: usize,
    iterations: usize,
) -> Result<Samples, String> {
    let mut s = Samples::default();
    for i in 0..warmup + iterations {
        let spec = spec(user, uid)?;
        let mut times = [Duration::ZERO; 4];
        let run = async {
            let t = Instant::now();
            step("create", b.create(&spec)).await?;
            times[0] = t.elapsed();
            let t = Instant::now();
            step("start", b.start(&spec)).await?;
            times[1] = t.elapsed();
            let t = Instant::now();
            let out = step("exec", b.exec(&spec, echo())).await?;
            times[2] = t.elapsed();
            check_output(&out)?;
            let t = Instant::now();
            step("destroy", b.destroy(&spec)).await?;
            times[3] = t.elapsed();
            Ok::<_, String>(())
        };
        if let Err(e) = run.await {
            cleanup(&*b, &spec).await;
            return Err(format!("iteration {}: {e}", i + 1));
        }
        if i >= warmup {
            s.total.push(times.iter().sum());
            for (name, d) in ["create", "start", "exec", "destroy"].into_iter().zip(times) {
                s.steps.entry(name).or_default().push(d);
            }
        }
    }
    Ok(s)
}

/// `/bin/echo hi` in one running workspace, started once (untimed).
pub async fn exec_loop(
    b: Arc<dyn Backend>,
    user: &str,
    uid: u32,
    warmup: usize,
    iterations: usize,
) -> Result<Samples, String> {
    let spec = spec(user, uid)?;
    let setup = async {
        step("create", b.create(&spec)).await?;
        step("start", b.start(&spec)).await?;
        Ok::<_, String>(())
    };
    if let Err(e) = setup.await {
        cleanup(&*b, &spec).await;
        return Err(format!("setting up the workspace: {e}"));
    }
    let mut s = Samples::default();
    for i in 0..warmup + iterations {
        let t = Instant::now();
        let res = step("exec", b.exec(&spec, echo())).await.and_then(|out| check_output(&out));
        let took = t.elapsed();
        if let Err(e) = res {
            cleanup(&*b, &spec).await;
            return Err(format!("iteration {}: {e}", i + 1));
        }
        if i >= warmup {
            s.total.push(took);
        }
    }
    step("destroy", b.destroy(&spec)).await.map_err(|e| format!("after the run: {e}"))?;
    Ok(s)
}
