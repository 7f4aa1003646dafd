//! The test image, built locally once per test process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use warren_backend_docker::{DockerBackend, DockerOptions};

/// The tag of the image the tests build.
pub const IMAGE: &str = "warren-test:busybox";

/// Backend options using the test image.
pub fn options() -> DockerOptions {
    DockerOptions { image: IMAGE.to_owned(), ..DockerOptions::default() }
}

/// Builds and imports the test image (once per process); panics when that fails.
pub fn ensure_image() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        std::thread::spawn(build_image).join().unwrap_or_else(|_| Err("building the test image panicked".into()))
    });
    if let Err(e) = r {
        panic!("the docker daemon answers but the test image could not be built: {e}");
    }
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Copies `src` to `root/dst` and every shared library `ldd` lists for it to the same path under `root`.
fn copy_with_libs(root: &Path, src: &Path, dst: &str) -> Result<(), String> {
    let target = root.join(dst.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("a parent")).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&target);
    std::fs::copy(src, &target).map_err(|e| format!("copying {}: {e}", src.display()))?;
    let out = std::process::Command::new("ldd").arg(src).output().map_err(|e| format!("running ldd: {e}"))?;
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if !word.starts_with('/') {
            continue;
        }
        let lib = root.join(word.trim_start_matches('/'));
        if lib.exists() {
            continue;
        }
        std::fs::create_dir_all(lib.parent().expect("a parent")).map_err(|e| e.to_string())?;
        std::fs::copy(word, &lib).map_err(|e| format!("copying {word}: {e}"))?;
    }
    Ok(())
}

fn build_image() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    for d in ["bin", "usr/bin", "etc", "tmp", "home", "proc", "dev", "sys", "root"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    let busybox = which("busybox").ok_or("busybox is not installed (scripts/install-deps installs busybox-static)")?;
    copy_with_libs(&root, &busybox, "/bin/busybox")?;
    let list = std::process::Command::new(&busybox).arg("--list").output().map_err(|e| e.to_string())?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).map_err(|e| e.to_string())?;
        }
    }
    let dash = which("dash").ok_or("dash is not installed")?;
    copy_with_libs(&root, &dash, "/bin/sh")?;
    let head = which("head").ok_or("head is not installed")?;
    copy_with_libs(&root, &head, "/usr/bin/head")?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").map_err(|e| e.to_string())?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n").map_err(|e| e.to_string())?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let backend = DockerBackend::with_options(dir.path(), options()).map_err(|e| e.to_string())?;
        warren_backend_docker::image::import_dir(backend.docker(), &root, IMAGE).await.map_err(|e| e.to_string())?;
        if !warren_backend_docker::image::exists(backend.docker(), IMAGE).await.map_err(|e| e.to_string())? {
            return Err(format!("{IMAGE} is missing after the import"));
        }
        Ok(())
    })
}
