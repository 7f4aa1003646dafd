use std::os::unix::fs::PermissionsExt;

use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::{Backend, ExecRequest};

#[tokio::test(flavor = "multi_thread")]
async fn smoke() {
    let t = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let b = NsBackend::new(
        t.path(),
        Some(HelperCmd {
            program: std::env::var("NSINIT")
                .map(Into::into)
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_warren-nsinit").into()),
            args: vec![],
        }),
    )
    .expect("open");
    let spec = warren_testkit::spec("u_smoke", 2_000_999);
    b.create(&spec).await.expect("create");
    let st = b.start(&spec).await.expect("start");
    eprintln!("{st:?}");
    let out = b.exec(&spec, ExecRequest::new(["sh", "-c", "id; hostname; pwd; ls /; cat /proc/self/status | grep -E 'Cap|Seccomp|NoNewPrivs'; cat /proc/self/uid_map; readlink /proc/self/ns/user; ls -ln /usr/bin/su; ip addr 2>&1 | head -5; echo err >&2; exit 3"])).await.expect("exec");
    eprintln!(
        "code={} stdout=\n{}\nstderr=\n{}",
        out.exit_code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.exit_code, 3);
    b.stop(&spec).await.expect("stop");
    b.destroy(&spec).await.expect("destroy");
}
