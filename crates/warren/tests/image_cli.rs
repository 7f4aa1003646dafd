//! `warren image` end to end on a real docker daemon: build an image from this host's programs,
//! import a rootfs directory under another tag, and run a workspace on it through the CLI with
//! `CONTAINER_IMAGE`. Skipped, with the reason printed, only when no daemon answers.
//! Uids 3_750_000.. belong to this file.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn import_and_use_an_image_without_a_registry() {
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        eprintln!("SKIPPED: no docker daemon answers ({why})");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
    let config = tmp.path().join("warren.toml");
    std::fs::write(&config, "uid_base = 3750000\nuid_count = 1000\n").expect("config");
    let state = tmp.path().join("state");
    let warren = |args: &[&str], image: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_warren"));
        c.arg("--state-dir").arg(&state).arg("--config").arg(&config).args(args);
        c.env_remove("WARREN_CONTAINER_IMAGE").env_remove("CONTAINER_IMAGE").env_remove("WARREN_BACKEND");
        if let Some(i) = image {
            c.env("CONTAINER_IMAGE", i);
        }
        c.output().expect("run warren")
    };
    // A root filesystem directory with a marker file, imported under its own tag.
    let root = tmp.path().join("rootfs");
    warren_backend_docker::image::minimal_rootfs(&root, &[]).expect("rootfs");
    std::fs::create_dir_all(root.join("usr/share")).expect("usr/share");
    std::fs::write(root.join("usr/share/image-marker"), "from-a-directory\n").expect("marker");
    let tag = "warren-image-cli:test";
    let out = warren(&["image", "import", root.to_str().expect("utf-8"), "--tag", tag], None);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(tag), "{}", show(&out));
    // A workspace on it: the marker is there, the command runs as the workspace's user.
    let c = warren(&["--backend", "docker", "workspace", "create", "u_img"], Some(tag));
    assert!(c.status.success(), "{}", show(&c));
    let out = warren(&["exec", "u_img", "--", "sh", "-c", "cat /usr/share/image-marker; id -u"], Some(tag));
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("from-a-directory\n"), "{}", show(&out));
    assert_ne!(text.lines().nth(1), Some("0"), "not root: {}", show(&out));
    let out = warren(&["workspace", "destroy", "u_img"], Some(tag));
    assert!(out.status.success(), "{}", show(&out));
    // The ns backend runs the same image: its /usr, not the host's.
    assert!(state.join("images/warren-image-cli_test/rootfs/bin/sh").exists(), "unpacked for ns");
    let script = "cat /usr/share/image-marker; test -e /usr/bin/python3 && echo host-python; id -un";
    let c = warren(&["--backend", "ns", "workspace", "create", "u_imgns"], Some(tag));
    assert!(c.status.success(), "{}", show(&c));
    let out = warren(&["exec", "u_imgns", "--", "sh", "-c", script], Some(tag));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-a-directory\nu_imgns\n", "{}", show(&out));
    // Without the image: the host's programs (positive control).
    let out = warren(&["workspace", "stop", "u_imgns"], None);
    assert!(out.status.success(), "{}", show(&out));
    let out = warren(&["exec", "u_imgns", "--", "sh", "-c", "test -e /usr/share/image-marker || echo host"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "host\n", "{}", show(&out));
    // An image that was never imported: a clear error naming the fix.
    let out = warren(&["workspace", "stop", "u_imgns"], None);
    assert!(out.status.success(), "{}", show(&out));
    let out = warren(&["exec", "u_imgns", "--", "true"], Some("never-imported:1"));
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warren image import"), "{}", show(&out));
    let out = warren(&["workspace", "destroy", "u_imgns"], None);
    assert!(out.status.success(), "{}", show(&out));
    let out = warren(&["image", "import", root.to_str().expect("utf-8"), "--tag", "../escape"], None);
    assert_eq!(out.status.code(), Some(1), "a bad tag is refused: {}", show(&out));
    // Bad input: a clear error, exit 1.
    let out = warren(&["image", "import", "/nonexistent/rootfs"], None);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rootfs"), "{}", show(&out));
}
