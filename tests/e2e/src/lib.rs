//! HENDU's services as real processes on real servers: starting them,
//! feeding them, reading what they wrote. Used by the end-to-end tests and by
//! the pipeline measurements (`src/bin/pipeline-bench.rs`).
//!
//! The binaries are looked up in `HENDU_BIN_DIR`, or else next to the test
//! executable's folder (`target/<profile>/`); `scripts/test.sh` builds them.

#![allow(clippy::missing_panics_doc, clippy::missing_errors_doc)]

pub mod broadcast;
pub mod faults;
pub mod pipeline;
pub mod radio;

// The launcher is the experiment runner's: one way to start a service.
pub use hendu_loadtest::local::{Service, bin_dir, eventually, free_port, free_ports, replicas};
