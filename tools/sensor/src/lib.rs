//! `hendu-sensor`: HENDU's sensor devices, simulated.
//!
//! A separate tool rather than a `hendu` subcommand: it is a client of the
//! services (it needs none of their code, only the protocol crate), it is
//! run where the devices would be (another machine, a load-test runner),
//! and the load generator links this library to drive thousands of devices.
//!
//! - [`programme`]: what the devices send: audio files cut into samples,
//!   as audio or as on-device fingerprints.
//! - [`client`]: one device's uploads over TCP v2, TCP v1 or REST, each
//!   counting its bytes on the wire and its round trips.
//! - [`run`]: many devices at once, in real time or as fast as possible,
//!   reconnecting, with a summary.

pub mod client;
pub mod programme;
pub mod run;
