//! One module per subcommand, and the arguments they share.

pub mod accounts;
pub mod index;
pub mod matching;
pub mod scan;
pub mod serve;

use anyhow::Result;

use crate::catalog::Catalog;
use crate::storage::StoreArgs;

/// Confidence from which a track is named (see docs/recognition.md).
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.5;

/// How many worker threads a command may use.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

impl JobsArgs {
    /// A thread pool of that many threads.
    ///
    /// # Errors
    /// If `--jobs` is zero or the threads cannot be started.
    pub fn pool(&self) -> Result<rayon::ThreadPool> {
        if self.jobs == Some(0) {
            anyhow::bail!("--jobs must be at least 1");
        }
        Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(self.jobs.unwrap_or(0))
            .build()?)
    }
}

/// What `match` and `scan` both take: the store to search and how to answer.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// JSON Lines on stdout (one object per answer), instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Below this confidence the answer is "not in the catalogue"; 0 reports
    /// the best candidate whatever its confidence.
    #[arg(long, value_name = "C", default_value_t = DEFAULT_MIN_CONFIDENCE)]
    pub min_confidence: f32,
}

impl SearchArgs {
    /// Loads the store into memory, reporting (and skipping) damaged track files.
    ///
    /// # Errors
    /// When the store cannot be opened or listed.
    pub fn load_catalog(&self) -> Result<Catalog> {
        let store = self.store.open(false)?;
        let catalog = Catalog::load(&store)?;
        for (source, e) in &catalog.damaged {
            eprintln!("warning: skipped {source}: {e}");
        }
        Ok(catalog)
    }
}
