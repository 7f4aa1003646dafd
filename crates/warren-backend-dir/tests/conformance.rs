//! The conformance suite (warren-testkit) run against the directory backend.

use warren_backend_dir::DirBackend;
use warren_core::BackendKind;
use warren_testkit::Harness;

fn harness() -> Harness<DirBackend> {
    Harness::new(BackendKind::Dir, |dir| DirBackend::new(dir).expect("opening the dir backend"))
        .skip_unless(DirBackend::probe())
}

warren_testkit::conformance_tests!(harness());
