//! The conformance suite (warren-testkit) run against the namespace backend. Every check is
//! skipped, with the reason printed, when `NsBackend::probe()` says this host cannot run it.

use warren_backend_ns::{HelperCmd, NsBackend};
use warren_core::BackendKind;
use warren_testkit::Harness;

fn harness() -> Harness<NsBackend> {
    Harness::new(BackendKind::Ns, |dir| {
        let helper = HelperCmd { program: env!("CARGO_BIN_EXE_warren-nsinit").into(), args: vec![] };
        NsBackend::new(dir, Some(helper)).expect("opening the ns backend")
    })
    .skip_unless(NsBackend::probe())
}

warren_testkit::conformance_tests!(harness());
