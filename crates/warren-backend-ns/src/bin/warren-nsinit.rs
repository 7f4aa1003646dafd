//! The namespace helper as its own small binary (faster to exec than the full `warren`).
fn main() {
    warren_backend_ns::helper_main(std::env::args_os().skip(1).collect())
}
