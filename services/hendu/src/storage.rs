//! Where `hendu` keeps the catalogue: the embedded store in `--store DIR`, or
//! the MySQL, MongoDB and Redis servers named by `HENDU_MYSQL_URL`,
//! `HENDU_MONGO_URL` and `HENDU_REDIS_URL` (the catalogue the services use).
//!
//! The embedded store is one SQLite file, `DIR/hendu.db`, holding the same
//! tables and documents as the servers (see the `hendu-storage` crate).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hendu_storage::config::vars;
use hendu_storage::{Storage, StorageConfig};
use tokio::runtime::Runtime;

/// The embedded store's file inside `--store DIR`.
pub const STORE_FILE: &str = "hendu.db";

/// The `--store` argument every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Store directory (the embedded store). Not needed, and refused, when
    /// HENDU_MYSQL_URL, HENDU_MONGO_URL and HENDU_REDIS_URL name servers.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// An open store and the runtime its clients run on.
#[derive(Debug)]
pub struct Opened {
    pub runtime: Runtime,
    pub storage: Storage,
}

impl Opened {
    /// Runs a storage call from synchronous code (any thread).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        // Closing the SQLite pool folds its write-ahead log back into the file.
        self.runtime.block_on(self.storage.close());
    }
}

impl StoreArgs {
    /// Opens the store; `create` makes a new embedded store if there is none.
    ///
    /// # Errors
    /// A clear message when neither or both of `--store` and the servers are
    /// given, when `DIR` holds no store (and `create` is false), or when the
    /// store cannot be opened.
    pub fn open(&self, create: bool) -> Result<Opened> {
        self.open_routed(create, &hendu_service::Faults::default())
    }

    /// As [`Self::open`], with the servers reached through `faults`'
    /// proxies when fault injection is on (`hendu serve`).
    ///
    /// # Errors
    /// As [`Self::open`], or a proxy that cannot listen.
    pub fn open_routed(&self, create: bool, faults: &hendu_service::Faults) -> Result<Opened> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let file = self.store.as_ref().map(|d| d.join(STORE_FILE));
        let config = StorageConfig::from_env(file.clone().unwrap_or_default())?;
        let config = match (config, &self.store) {
            (StorageConfig::Servers(_), Some(_)) => bail!(
                "--store is for the embedded store, but {} name servers; unset them or drop --store",
                [vars::MYSQL_URL, vars::MONGO_URL, vars::REDIS_URL].join(", ")
            ),
            (StorageConfig::Embedded { .. }, None) => bail!(
                "say where the catalogue is: --store DIR, or servers in {}",
                [vars::MYSQL_URL, vars::MONGO_URL, vars::REDIS_URL].join(", ")
            ),
            (StorageConfig::Embedded { path, queue }, Some(dir)) => {
                prepare_dir(dir, &path, create)?;
                StorageConfig::Embedded { path, queue }
            }
            (servers, None) => servers,
        };
        let mut config = config;
        runtime
            .block_on(faults.route_storage(&mut config))
            .context("cannot start the fault proxies")?;
        let storage = runtime
            .block_on(Storage::connect(&config))
            .with_context(|| format!("cannot open the store ({config:?})"))?;
        Ok(Opened { runtime, storage })
    }
}

fn prepare_dir(dir: &Path, file: &Path, create: bool) -> Result<()> {
    if file.exists() {
        return Ok(());
    }
    if !create {
        bail!(
            "{} is not a HENDU store (no {STORE_FILE}); create one with `hendu index --store {} ...`",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}
