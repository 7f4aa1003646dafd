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
