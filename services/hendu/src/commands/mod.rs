//! One module per subcommand.

pub mod index;
pub mod matching;
pub mod scan;
