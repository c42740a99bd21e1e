//! The pages. Each is a plain HTML document with working links and forms;
//! the script only adds live rows.

pub mod account;
pub mod admin;
pub mod catalogue;
pub mod dashboard;
pub mod filters;
pub mod play;
pub mod plays;
pub mod reports;
