//! Timestamps: one type for all of warren, defined in `warren-core`.

pub use warren_core::time::*;
