//! The TCP protocol of HENDU's sensor devices, as pure functions on bytes.
//!
//! The Communication service, the device simulator (`hendu-sensor`) and the
//! load generator all speak it through this crate; a firmware author needs
//! only `docs/sensor-protocol.md`, whose hex dumps a test checks against
//! this code.
//!
//! - [`v1`]: the protocol of the HENDU paper (section 4.1.2): text lines on
//!   a control port (habilitation, then a port request), then one upload on
//!   a data port reserved for the device, authorised by a one-time
//!   [`v1::Ticket`].
//! - [`v2`]: the one to use. One long-lived connection of [`frame`]s
//!   (length, version, type, sequence number, payload, CRC-32), a
//!   challenge-response [`login`] in which the device secret never crosses
//!   the wire, an acknowledgement per sample carrying its id, heartbeats,
//!   and an error frame with a stable [`codes::Code`] for every refusal.
//!
//! Nothing here does I/O or allocates more than the caller's limit: the
//! decoders take the bytes received so far and answer "a message and how
//! many bytes it took", "not yet", or an error.

pub mod codes;
pub mod frame;
pub mod login;
pub mod v1;
pub mod v2;

pub use codes::Code;
pub use frame::{Frame, FrameError};
