//! The conformance suite (warren-testkit) run against the docker backend.
//!
//! Skipped, with the reason printed, only when no docker daemon answers. The image is built
//! here, locally (nothing can be pulled): busybox applets, Debian's `dash` as `/bin/sh` and GNU
//! `head` (busybox-static's own shell runs its applets in preference to `PATH`, and busybox
//! `head -c` knows no `600M`), each with the shared libraries `ldd` names, imported from a
//! directory through `warren_backend_docker::image::import_dir`.

mod common;

use warren_backend_docker::DockerBackend;
use warren_core::BackendKind;
use warren_testkit::Harness;

fn harness() -> Harness<DockerBackend> {
    let probe = DockerBackend::probe();
    if probe.is_ok() {
        common::ensure_image();
    }
    Harness::new(BackendKind::Docker, |dir| {
        DockerBackend::with_options(dir, common::options()).expect("opening the docker backend")
    })
    .skip_unless(probe)
}

warren_testkit::conformance_tests!(harness());

/// What the docker backend asks of the daemon, read back with `inspect`: warren's labels, no
/// network, the limits, no capabilities, a read-only root with its tmpfs `/tmp`; and the same
/// workspace with `read_only_root` off (the `[docker]` table) keeps its image's root unwritable
/// to the workspace user and `/tmp` usable.
#[tokio::test(flavor = "multi_thread")]
async fn containers_carry_warrens_labels_limits_and_lockdown() {
    use warren_core::{Backend, ExecRequest};
    if let Err(why) = DockerBackend::probe() {
        println!("SKIPPED: no docker daemon answers ({why})");
        return;
    }
    common::ensure_image();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).expect("chmod");
    for read_only_root in [true, false] {
        let state = tmp.path().join(format!("state-{read_only_root}"));
        let opts = warren_backend_docker::DockerOptions { read_only_root, ..common::options() };
        let b = DockerBackend::with_options(&state, opts).expect("backend");
        let mut s = warren_testkit::spec("u_inspect", 3_790_000 + u32::from(read_only_root));
        s.limits.cpu_millis = Some(500);
        s.limits.memory_bytes = Some(128 << 20);
        s.limits.pids = Some(64);
        b.create(&s).await.expect("create");
        b.start(&s).await.expect("start");
        let c = b
            .docker()
            .inspect_container(
                &DockerBackend::container_name(&s),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .expect("inspect");
        let labels = c.config.as_ref().and_then(|c| c.labels.clone()).expect("labels");
        assert_eq!(labels.get("warren.workspace"), Some(&s.id.to_string()));
        assert_eq!(labels.get("warren.user"), Some(&"u_inspect".to_owned()));
        assert_eq!(labels.get("warren.state"), Some(&state.display().to_string()));
        let h = c.host_config.expect("host config");
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!((h.memory, h.memory_swap), (Some(128 << 20), Some(128 << 20)), "no swap on top of memory");
        assert_eq!(h.pids_limit, Some(64));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_owned()]));
        assert!(h.security_opt.unwrap_or_default().iter().any(|o| o.starts_with("no-new-privileges")));
        assert_eq!(h.readonly_rootfs, Some(read_only_root));
        assert_eq!(h.tmpfs.is_some(), read_only_root, "a tmpfs /tmp only with a read-only root");
        let out = b
            .exec(&s, ExecRequest::new(["sh", "-c", "echo x > /tmp/t && cat /tmp/t; echo x > /probe || echo refused"]))
            .await
            .expect("exec");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x\nrefused\n", "{out:?}");
        b.destroy(&s).await.expect("destroy");
    }
}
