//! The test image, built locally once per test process.

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

fn build_image() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    warren_backend_docker::image::minimal_rootfs(&root, &[]).map_err(|e| e.to_string())?;
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
