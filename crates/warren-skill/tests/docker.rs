//! A python skill on the docker backend, in an image with Python built here from the host's own
//! files (nothing can be pulled): Debian's `dash` as `/bin/sh`, `sleep` (the container's main
//! process), `python3.11` with its standard library, the wheels its `ensurepip` installs from, and
//! every shared library `ldd` names.
//!
//! Skipped, saying why, when no docker daemon answers. The image is passed to the engine through
//! `WARREN_CONTAINER_IMAGE`, set before the engine opens: this file has one test, so nothing
//! else in its process reads the environment meanwhile.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_gone, build_wheel, Env};
use serde_json::json;
use warren_backend_docker::{DockerBackend, DockerOptions};
use warren_core::BackendKind;
use warren_skill::{BuildRequest, PackageSource, Skills};

/// The test image; the tag names the recipe: change it with the recipe (an existing image of this
/// tag is reused).
const IMAGE: &str = "warren-skill-test:python-1";

fn copy_file(root: &Path, src: &Path) -> Result<(), String> {
    let dst = root.join(src.strip_prefix("/").map_err(|e| e.to_string())?);
    if dst.exists() {
        return Ok(());
    }
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    }
    std::fs::copy(src, &dst).map(drop).map_err(|e| format!("copying {}: {e}", src.display()))
}

/// Copies `bin` and the libraries `ldd` lists for it.
fn copy_with_libs(root: &Path, bin: &Path) -> Result<(), String> {
    copy_file(root, bin)?;
    let out = Command::new("ldd").arg(bin).output().map_err(|e| format!("running ldd: {e}"))?;
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if word.starts_with('/') {
            copy_file(root, Path::new(word))?;
        }
    }
    Ok(())
}

/// Copies the tree `src` (regular files, directories, symlinks), leaving out test suites and
/// caches; shared objects bring their libraries.
fn copy_tree(root: &Path, src: &Path) -> Result<(), String> {
    for ent in std::fs::read_dir(src).map_err(|e| format!("listing {}: {e}", src.display()))?.flatten() {
        let path = ent.path();
        let name = ent.file_name();
        if matches!(name.to_str(), Some("test" | "tests" | "__pycache__" | "idlelib" | "tkinter" | "turtledemo")) {
            continue;
        }
        let ft = ent.file_type().map_err(|e| e.to_string())?;
        let dst = root.join(path.strip_prefix("/").map_err(|e| e.to_string())?);
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| e.to_string())?;
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
            }
            let _ = std::os::unix::fs::symlink(target, &dst);
        } else if ft.is_dir() {
            copy_tree(root, &path)?;
        } else if path.extension().is_some_and(|e| e == "so") {
            copy_with_libs(root, &path)?;
        } else {
            copy_file(root, &path)?;
        }
    }
    Ok(())
}

fn build_image(state: &Path) -> Result<(), String> {
    let python = std::fs::canonicalize("/usr/bin/python3").map_err(|e| format!("no /usr/bin/python3: {e}"))?;
    let version = python.file_name().and_then(|n| n.to_str()).ok_or("python3's name")?.to_owned();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    for d in ["bin", "usr/bin", "etc", "tmp", "home", "proc", "dev", "sys", "root"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    let dash = ["/usr/bin/dash", "/bin/dash"].into_iter().map(PathBuf::from).find(|p| p.exists()).ok_or("no dash")?;
    copy_with_libs(&root, &dash)?;
    std::fs::copy(&dash, root.join("bin/sh")).map_err(|e| e.to_string())?;
    // The container's main process is `sleep`.
    let sleep =
        ["/usr/bin/sleep", "/bin/sleep"].into_iter().map(PathBuf::from).find(|p| p.exists()).ok_or("no sleep")?;
    copy_with_libs(&root, &sleep)?;
    copy_with_libs(&root, &python)?;
    std::os::unix::fs::symlink(&version, root.join("usr/bin/python3")).map_err(|e| e.to_string())?;
    copy_tree(&root, &Path::new("/usr/lib").join(&version))?;
    if Path::new("/usr/share/python-wheels").is_dir() {
        copy_tree(&root, Path::new("/usr/share/python-wheels"))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").map_err(|e| e.to_string())?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n").map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let opts = DockerOptions { image: IMAGE.to_owned(), ..DockerOptions::default() };
        let backend = DockerBackend::with_options(state, opts).map_err(|e| e.to_string())?;
        warren_backend_docker::image::import_dir(backend.docker(), &root, IMAGE).await.map_err(|e| e.to_string())
    })
}

/// Whether the daemon has [`IMAGE`] already.
fn image_exists(state: &Path) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let opts = DockerOptions { image: IMAGE.to_owned(), ..DockerOptions::default() };
        let backend = DockerBackend::with_options(state, opts).map_err(|e| e.to_string())?;
        warren_backend_docker::image::exists(backend.docker(), IMAGE).await.map_err(|e| e.to_string())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn python_skill_on_docker() {
    if let Err(why) = DockerBackend::probe() {
        eprintln!("skipped: no docker daemon answers: {why}");
        return;
    }
    common::require_python_venv();
    let env = Env::new(BackendKind::Docker, 6);
    let image_state = env.tmp.path().join("image");
    std::fs::create_dir_all(&image_state).expect("mkdir");
    let built = std::thread::spawn(move || match image_exists(&image_state) {
        Ok(true) => Ok(()),
        _ => build_image(&image_state),
    })
    .join()
    .expect("the image build panicked");
    if let Err(e) = built {
        panic!("the docker daemon answers but the python test image could not be built: {e}");
    }
    // This test is alone in its process (see the module docs).
    std::env::set_var("WARREN_CONTAINER_IMAGE", IMAGE);
    let engine = env.open().await.expect("engine on docker");
    let skills = Skills::new(&engine);
    let dir = env.skill_dir();
    build_wheel(&dir.join("wheels"), "demo_pkg", "0.1.0");
    let text = "---\nname: dock\ndescription: d\nruntime: python\npackages: [wheels/demo_pkg-0.1.0-py3-none-any.whl]\n\
                limits: { memory: 256M, pids: 64 }\ntools: [run_python, read_file]\n---\n";
    let req = BuildRequest {
        text: text.to_owned(),
        packages: PackageSource::Dir(dir.clone()),
        owner: None,
        backend: None,
        origin: "test".into(),
        max_limits: None,
    };
    let rec = skills.build(req).await.expect("build on docker");
    assert_eq!(rec.backend, BackendKind::Docker);
    assert!(rec.build.warnings.is_empty(), "{:?}", rec.build.warnings);
    let user = rec.id.user().expect("user");
    let info = engine.status(&user).await.expect("status");

    let r = skills
        .call(
            &rec.id,
            "run_python",
            json!({ "code": "import demo_pkg, os\nprint(demo_pkg.hello(os.environ['HOME']))" }),
        )
        .await
        .expect("run_python");
    let mut v = serde_json::to_value(&r).expect("JSON");
    v["duration_ms"] = json!(0);
    let home = rec.home.clone().expect("home");
    assert_eq!(
        v,
        json!({
            "tool": "run_python", "ok": true, "exit_code": 0, "signal": null,
            "stdout": format!("hello, {home}, from demo_pkg 0.1.0\n"), "stderr": "",
            "content": null, "entries": null, "path": null, "bytes": null, "encoding": "utf8",
            "timed_out": false, "truncated": false, "duration_ms": 0, "error": null,
        })
    );
    let err = skills.call(&rec.id, "run_command", json!({ "command": "id" })).await.expect_err("not allowed");
    assert_eq!(err.code(), "tool_not_allowed");
    let stats = engine.stats(&user).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, Some(256 << 20), "the container has the skill's memory limit");
    // No network: loopback only, and the host's loopback is not the sandbox's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let code = format!(
        "import socket\nprint([n for _, n in socket.if_nameindex()])\ntry:\n    \
         socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    print('reached the host')\n\
         except OSError as e:\n    print('refused')"
    );
    let r = skills.call(&rec.id, "run_python", json!({ "code": code })).await.expect("run_python");
    assert_eq!(r.stdout.as_deref(), Some("['lo']\nrefused\n"), "{r:?}");

    skills.cleanup(&rec.id).await.expect("cleanup");
    assert_gone(&engine, &env.cfg.state_dir, &rec.id, Some(&rec), info.uid).await;
}
