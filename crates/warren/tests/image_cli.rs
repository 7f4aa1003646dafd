//! `warren image` end to end on a real docker daemon: build an image from this host's programs,
//! import a rootfs directory under another tag, and run a workspace on it through the CLI with
//! `CONTAINER_IMAGE`. Skipped, with the reason printed, only when no daemon answers.
//! Uids 3_750_000.. belong to this file.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{show, Warren};

/// Runs `warren ARGS` (no `--backend` unless in ARGS), with `CONTAINER_IMAGE` when `image` is
/// given.
fn run(cli: &Warren, args: &[&str], image: Option<&str>) -> Output {
    let mut c = cli.cmd(args);
    if let Some(i) = image {
        c.env("CONTAINER_IMAGE", i);
    }
    c.output().expect("run warren")
}

/// A root filesystem of this host's programs with `/usr/share/image-marker` saying `marker`.
fn rootfs(cli: &Warren, marker: &str) -> PathBuf {
    let root = cli.dir.join("rootfs");
    warren_backend_docker::image::minimal_rootfs(&root, &[]).expect("rootfs");
    std::fs::create_dir_all(root.join("usr/share")).expect("usr/share");
    std::fs::write(root.join("usr/share/image-marker"), format!("{marker}\n")).expect("marker");
    root
}

#[test]
fn import_and_use_an_image_without_a_registry() {
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        eprintln!("SKIPPED: no docker daemon answers ({why})");
        return;
    }
    let cli = Warren::new(3_750_000, "");
    let warren = |args: &[&str], image: Option<&str>| run(&cli, args, image);
    // A root filesystem directory with a marker file, imported under its own tag.
    let root = rootfs(&cli, "from-a-directory");
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
    assert!(cli.state.join("images/warren-image-cli_test/rootfs/bin/sh").exists(), "unpacked for ns");
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

/// A `docker save` archive (of an image imported from a directory) is flattened for the ns
/// backend: named by `--tag`, or else by the archive's own tag, and with no docker daemon the ns
/// import alone succeeds.
#[test]
fn a_docker_save_archive_runs_on_the_ns_backend() {
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        eprintln!("SKIPPED: no docker daemon answers ({why})");
        return;
    }
    let cli = Warren::new(3_752_000, "");
    let warren = |args: &[&str], image: Option<&str>, docker_host: Option<&str>| match docker_host {
        Some(h) => cli.cmd(args).env("DOCKER_HOST", h).output().expect("run warren"),
        None => run(&cli, args, image),
    };
    // An image in docker, then `docker save`d.
    let root = rootfs(&cli, "from-docker-save");
    let src_tag = "warren-image-cli:save-src";
    let out = warren(&["image", "import", root.to_str().expect("utf-8"), "--tag", src_tag], None, None);
    assert!(out.status.success(), "{}", show(&out));
    let saved = cli.dir.join("saved.tar");
    let out = Command::new("docker").arg("save").arg("-o").arg(&saved).arg(src_tag).output().expect("run docker save");
    assert!(out.status.success(), "docker save: {}", show(&out));
    let saved = saved.to_str().expect("utf-8");

    // --tag names the ns image; docker loads the archive too.
    let tag = "warren-image-cli:from-save";
    let out = warren(&["image", "import", saved, "--tag", tag], None, None);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("as {tag} for the ns backend")), "{}", show(&out));
    assert!(stdout.contains("into docker"), "{}", show(&out));
    let marker =
        |name: &str| std::fs::read_to_string(cli.state.join("images").join(name).join("rootfs/usr/share/image-marker"));
    assert_eq!(marker("warren-image-cli_from-save").expect("marker unpacked"), "from-docker-save\n");
    let c = warren(&["--backend", "ns", "workspace", "create", "u_save"], Some(tag), None);
    assert!(c.status.success(), "{}", show(&c));
    let out = warren(&["exec", "u_save", "--", "sh", "-c", "cat /usr/share/image-marker; id -un"], Some(tag), None);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-docker-save\nu_save\n", "{}", show(&out));
    let out = warren(&["workspace", "destroy", "u_save"], None, None);
    assert!(out.status.success(), "{}", show(&out));

    // No --tag and no docker daemon: the archive's own tag names it, and the ns import suffices.
    std::fs::remove_dir_all(cli.state.join("images/warren-image-cli_save-src")).expect("remove the directory import");
    let out = warren(&["image", "import", saved], None, Some("unix:///nonexistent/docker.sock"));
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("as {src_tag} for the ns backend")), "{}", show(&out));
    assert!(stdout.contains("no docker daemon answers"), "{}", show(&out));
    assert_eq!(marker("warren-image-cli_save-src").expect("marker unpacked"), "from-docker-save\n");
}

/// A workspace's own image (`workspace create --image`): kept in the store, so it outlives the
/// environment it was created in; two workspaces on one ns backend run two different program
/// trees; an image never imported fails at create and leaves nothing; dir refuses one; docker
/// runs it when a daemon answers.
#[test]
fn each_workspace_runs_its_own_image() {
    let cli = Warren::new(3_751_000, "");
    let warren = |args: &[&str]| run(&cli, args, None);
    let root = rootfs(&cli, "own-image");
    let tag = "warren-own-image:1";
    let out = warren(&["image", "import", root.to_str().expect("utf-8"), "--tag", tag]);
    assert!(out.status.success(), "{}", show(&out));

    let out = warren(&["--backend", "ns", "workspace", "create", "u_own", "--image", tag]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("image {tag}")), "{}", show(&out));
    let out = warren(&["--backend", "ns", "workspace", "create", "u_host"]);
    assert!(out.status.success(), "{}", show(&out));
    let probe = "cat /usr/share/image-marker 2>/dev/null || echo host";
    let exec = |user: &str| {
        let out = warren(&["exec", user, "--", "sh", "-c", probe]);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(exec("u_own"), "own-image\n");
    assert_eq!(exec("u_host"), "host\n", "positive control: no image, the host's programs");
    // Stored, not taken from the environment: the same after a stop and a new start.
    let out = warren(&["workspace", "stop", "u_own"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(exec("u_own"), "own-image\n");
    let out = warren(&["--json", "workspace", "status", "u_own"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status["image"], tag, "{}", show(&out));

    // Never imported: refused at create, with the fix named, and nothing left behind.
    let out = warren(&["--backend", "ns", "workspace", "create", "u_never", "--image", "never-imported:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warren image import"), "{}", show(&out));
    let out = warren(&["workspace", "status", "u_never"]);
    assert_ne!(out.status.code(), Some(0), "no workspace was kept: {}", show(&out));
    // Bad names and backends that cannot run an image: clear errors.
    let out = warren(&["--backend", "ns", "workspace", "create", "u_bad", "--image", "../../etc"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"), "{}", show(&out));
    let out = warren(&["--backend", "dir", "workspace", "create", "u_dirimg", "--image", tag]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dir backend"), "{}", show(&out));

    match warren_backend_docker::DockerBackend::probe() {
        Ok(()) => {
            let out = warren(&["--backend", "docker", "workspace", "create", "u_owndock", "--image", tag]);
            assert!(out.status.success(), "{}", show(&out));
            assert_eq!(exec("u_owndock"), "own-image\n");
            let out = warren(&["workspace", "destroy", "u_owndock"]);
            assert!(out.status.success(), "{}", show(&out));
        }
        Err(why) => eprintln!("docker part SKIPPED: no docker daemon answers ({why})"),
    }
    // A coding session's sandbox runs an image too.
    let project = cli.dir.join("project");
    std::fs::create_dir_all(&project).expect("project");
    std::fs::write(project.join("README"), "hi\n").expect("file");
    let path = project.to_str().expect("utf-8");
    let out = warren(&["--backend", "ns", "--json", "code", "start", "--path", path, "--image", tag]);
    assert!(out.status.success(), "{}", show(&out));
    let session: serde_json::Value = serde_json::from_slice(&out.stdout).expect("session json");
    let id = session["id"].as_str().expect("session id").to_owned();
    let out = warren(&["code", "exec", &id, "--", "sh", "-c", "cat /usr/share/image-marker README"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "own-image\nhi\n", "{}", show(&out));
    let out = warren(&["code", "stop", &id]);
    assert!(out.status.success(), "a read-only command left nothing to sync: {}", show(&out));
    // So does a sandbox built from a skill file that names one.
    let skill = cli.dir.join("skill.md");
    let text = format!(
        "---\nname: own-image\ndescription: d\nruntime: shell\ntools: [run_command]\nimage: {tag}\n---\n# hi\n"
    );
    std::fs::write(&skill, text).expect("skill file");
    let out = warren(&["--backend", "ns", "skill", "build", skill.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", show(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = warren(&["skill", "tool", &id, "run_command", "--", "cat", "/usr/share/image-marker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "own-image\n", "{}", show(&out));
    let out = warren(&["skill", "cleanup", &id]);
    assert!(out.status.success(), "{}", show(&out));
    for u in ["u_own", "u_host"] {
        let out = warren(&["workspace", "destroy", u]);
        assert!(out.status.success(), "{}", show(&out));
    }
}

/// A tar of a root filesystem (`tar -C rootfs -c .`, as `debootstrap` trees are shipped) is the
/// third kind of import: both backends run it.
#[test]
fn a_rootfs_tar_runs_on_docker_and_ns() {
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        eprintln!("SKIPPED: no docker daemon answers ({why})");
        return;
    }
    let cli = Warren::new(3_753_000, "");
    let root = rootfs(&cli, "from-a-rootfs-tar");
    let tar = cli.dir.join("rootfs.tar");
    let out = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").output().expect("run tar");
    assert!(out.status.success(), "tar: {}", show(&out));
    let tag = "warren-image-cli:rootfs-tar";
    let out = run(&cli, &["image", "import", tar.to_str().expect("utf-8"), "--tag", tag], None);
    assert!(out.status.success(), "{}", show(&out));
    for (backend, user) in [("docker", "u_tardock"), ("ns", "u_tarns")] {
        let out = run(&cli, &["--backend", backend, "workspace", "create", user, "--image", tag], None);
        assert!(out.status.success(), "{backend}: {}", show(&out));
        let out = run(&cli, &["exec", user, "--", "sh", "-c", "cat /usr/share/image-marker; id -un"], None);
        assert!(out.status.success(), "{backend}: {}", show(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("from-a-rootfs-tar\n{user}\n"), "{backend}");
        let out = run(&cli, &["workspace", "destroy", user], None);
        assert!(out.status.success(), "{backend}: {}", show(&out));
    }
}

/// The seed's pooled mode, configured the seed's way (environment variables) on the real
/// binary: `USE_CONTAINERS` puts new workspaces in the pool, `USERS_PER_CONTAINER` and
/// `MAX_CONTAINERS` bound it, and a full pool is a clear error naming the settings.
#[test]
fn the_seed_environment_variables_drive_the_pool() {
    if let Err(why) = warren_backend_docker::DockerBackend::probe() {
        eprintln!("SKIPPED: no docker daemon answers ({why})");
        return;
    }
    let cli = Warren::new(3_754_000, "");
    let root = rootfs(&cli, "pooled");
    let tag = "warren-image-cli:pool";
    let out = run(&cli, &["image", "import", root.to_str().expect("utf-8"), "--tag", tag], None);
    assert!(out.status.success(), "{}", show(&out));
    let pooled = |args: &[&str]| {
        let mut c = cli.cmd(args);
        c.env("USE_CONTAINERS", "true").env("MAX_CONTAINERS", "1").env("USERS_PER_CONTAINER", "2");
        c.env("CONTAINER_IMAGE", tag);
        c.output().expect("run warren")
    };
    for u in ["u_poola", "u_poolb"] {
        let out = pooled(&["workspace", "create", u]);
        assert!(out.status.success(), "{}", show(&out));
    }
    let out = pooled(&["--json", "workspace", "status", "u_poola"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status["backend"], "pool", "{}", show(&out));
    let out = pooled(&["exec", "u_poola", "--", "sh", "-c", "pwd; id -un; cat /usr/share/image-marker"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/workspace/u_poola\nu_poola\npooled\n", "{}", show(&out));
    // One container of two users: the third is refused, naming the settings, and nothing is kept.
    let out = pooled(&["workspace", "create", "u_poolc"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MAX_CONTAINERS") && err.contains("USERS_PER_CONTAINER"), "{}", show(&out));
    let out = pooled(&["workspace", "status", "u_poolc"]);
    assert_ne!(out.status.code(), Some(0), "nothing was kept of the refused workspace: {}", show(&out));
    // A pooled workspace stays in the pool even when the variables are gone.
    let out = run(&cli, &["--json", "workspace", "status", "u_poolb"], None);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status["backend"], "pool", "{}", show(&out));
    for u in ["u_poola", "u_poolb"] {
        let out = pooled(&["workspace", "destroy", u]);
        assert!(out.status.success(), "{}", show(&out));
    }
    // The pool's container belongs to this state directory: remove it.
    let state = cli.state.to_str().expect("utf-8");
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=warren.pool={state}")])
        .output()
        .expect("docker ps");
    for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
}
