//! `hendu index`: fingerprint files into the store.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hendu_fingerprint::{PeakProfile, fingerprint_file};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use hendu_storage::model::{ContentHash, MusicState, NewMusic, Role, UserId};

use crate::commands::JobsArgs;
use crate::storage::{Opened, StoreArgs};
use crate::walk;

/// Arguments of `hendu index`.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// Store directory, created if missing (or the servers, see below).
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// The musician (by e-mail) the new tracks belong to: their plays are
    /// theirs to see (default: no one; an administrator sees them).
    #[arg(long, value_name = "EMAIL")]
    pub owner: Option<String>,
    /// Audio files, or folders to search recursively.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

enum Outcome {
    Indexed { seconds: f64 },
    AlreadyIndexed { as_source: String },
    Failed(String),
}

/// Runs `hendu index`. Returns the process exit code: 0 when every file was
/// indexed or already present, 1 when some could not be read.
///
/// # Errors
/// When the store itself cannot be created or written.
pub fn run(args: &IndexArgs) -> Result<i32> {
    let store = args.store.open(true)?;
    let owner = match &args.owner {
        None => None,
        Some(email) => {
            let user = store
                .block_on(
                    store
                        .storage
                        .relational
                        .user_by_email(&email.trim().to_lowercase()),
                )?
                .with_context(|| {
                    format!("no user {email}: create them first (hendu user create)")
                })?;
            if user.role != Role::Musician {
                bail!("{email} is not a musician: only musicians own tracks");
            }
            Some(user.id)
        }
    };
    let (files, walk_errors) = walk::expand(&args.paths);
    let pool = args.jobs.pool()?;
    let jobs = pool.current_num_threads();
    let progress = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files, {elapsed} elapsed, {eta} left  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for (path, e) in &walk_errors {
        progress.suspend(|| eprintln!("error: {}: {e}", path.display()));
    }
    // Same content under two names in one run: only one of them is fingerprinted.
    let claimed = Mutex::new(std::collections::HashMap::<ContentHash, String>::new());
    let started = Instant::now();
    let outcomes: Vec<(PathBuf, Outcome)> = pool.install(|| {
        files
            .par_iter()
            .map(|path| {
                let outcome = index_one(&store, path, owner, &claimed);
                if let Outcome::Failed(reason) = &outcome {
                    progress.suspend(|| eprintln!("error: {}: {reason}", path.display()));
                }
                progress.set_message(short_name(path));
                progress.inc(1);
                (path.clone(), outcome)
            })
            .collect()
    });
    progress.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();

    let mut indexed = 0usize;
    let mut audio_s = 0.0;
    let mut already = 0usize;
    let mut failed = walk_errors.len();
    for (_, outcome) in &outcomes {
        match outcome {
            Outcome::Indexed { seconds } => {
                indexed += 1;
                audio_s += seconds;
            }
            Outcome::AlreadyIndexed { .. } => already += 1,
            Outcome::Failed(_) => failed += 1,
        }
    }
    for (path, outcome) in &outcomes {
        if let Outcome::AlreadyIndexed { as_source } = outcome
            && Path::new(as_source) != path
        {
            eprintln!(
                "note: {} is the same audio as {as_source}; kept once",
                path.display()
            );
        }
    }
    eprintln!(
        "indexed {indexed} new file(s), {:.2} h of audio, in {wall:.1} s ({:.0}x real time on {jobs} thread(s), {:.0}x per thread); {already} already in the store; {failed} failed",
        audio_s / 3600.0,
        audio_s / wall.max(1e-9),
        audio_s / wall.max(1e-9) / jobs as f64,
    );
    Ok(if failed > 0 { 1 } else { 0 })
}

fn short_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn content_hash(path: &Path) -> std::io::Result<ContentHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    // Lowercase hex of a BLAKE3 digest always parses.
    Ok(ContentHash::parse(&hasher.finalize().to_hex()).expect("BLAKE3 hex"))
}

fn index_one(
    store: &Opened,
    path: &Path,
    owner: Option<UserId>,
    claimed: &Mutex<std::collections::HashMap<ContentHash, String>>,
) -> Outcome {
    let source = path.to_string_lossy().into_owned();
    let hash = match content_hash(path) {
        Ok(hash) => hash,
        Err(e) => return Outcome::Failed(format!("cannot read: {e}")),
    };
    match store.block_on(store.storage.relational.music_by_hash(&hash)) {
        Ok(Some(existing)) if existing.state == MusicState::Ready => {
            return Outcome::AlreadyIndexed {
                as_source: existing.source,
            };
        }
        Ok(_) => {}
        Err(e) => return Outcome::Failed(format!("cannot read the store: {e}")),
    }
    {
        let mut claimed = claimed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = claimed.get(&hash) {
            return Outcome::AlreadyIndexed {
                as_source: first.clone(),
            };
        }
        claimed.insert(hash.clone(), source.clone());
    }
    let fingerprint = match fingerprint_file(path, PeakProfile::CATALOGUE) {
        Ok(fp) => fp,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let title = path
        .file_stem()
        .map_or_else(|| source.clone(), |s| s.to_string_lossy().into_owned());
    let duration_ms = (fingerprint.duration_s * 1000.0).round() as u32;
    let music = match NewMusic::new(&title, None, duration_ms, hash, &source) {
        Ok(mut music) => {
            music.owner = owner;
            music
        }
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    // The audio stays where it is: the store keeps its path, not a copy.
    let added = store.block_on(store.storage.add_music(
        &music,
        &fingerprint.peaks,
        fingerprint.frames,
        None,
    ));
    match added {
        Ok(_) => Outcome::Indexed {
            seconds: fingerprint.duration_s,
        },
        Err(e) => Outcome::Failed(format!("cannot store: {e}")),
    }
}
