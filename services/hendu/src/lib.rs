//! `hendu`, the all-in-one command.
//!
//! # Layout
//! - [`commands`]: one module per subcommand (`index`, `match`, `scan`, `serve`).
//! - [`storage`]: where the catalogue is: `--store DIR` or the servers.
//! - [`catalog`]: the store loaded into a searchable index.
//! - [`walk`]: files and folders from the command line to a list of files.

pub mod catalog;
pub mod commands;
pub mod storage;
pub mod walk;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// HENDU recognises catalogue music in audio: index your tracks once, then
/// identify clips or find every track played in a long recording.
///
/// Quick start:
///   hendu index --store ./catalogue ~/Music
///   hendu match --store ./catalogue clip.mp3
///   hendu scan  --store ./catalogue radio-recording.ogg
///   hendu serve --store ./catalogue        (the services: uploads, sensors, radio stations)
///   hendu token create --store ./catalogue admin@example.org   (an API token)
///
/// Formats: MP3, AAC (ADTS, MP4/M4A), FLAC, Ogg Vorbis, WAV/PCM, AIFF, ALAC, CAF, MKV/WebM audio.
#[derive(Debug, Parser)]
#[command(name = "hendu", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fingerprint audio files (or whole folders) into a store.
    ///
    /// Uses every core (or --jobs N). Files already in the store (same audio
    /// bytes, whatever their name) are skipped; a file that cannot be decoded
    /// is reported and nothing of it is kept. Exit status 1 if any file failed.
    Index(commands::index::IndexArgs),
    /// Identify short clips: which track, where in it, how sure.
    ///
    /// Prints a table, or with --json one object per query:
    /// {"query", "match": null | {"source", "title", "block", "offset_s",
    /// "span_s", "speed", "score", "confidence", "evidence"}, "elapsed_ms",
    /// "match_ms"}; "evidence" is what the confidence is made of.
    /// A clip whose best candidate is below --min-confidence gets "match": null
    /// ("not in the catalogue").
    Match(commands::matching::MatchArgs),
    /// Find every catalogue track played in a long recording (a radio
    /// recording, a DJ set, an event), with start and end times.
    ///
    /// Streams the file with bounded memory and prints one row per play, or with
    /// --json one object per play: {"start_s", "end_s", "source", "title",
    /// "offset_s", "speed", "confidence", "score"}.
    Scan(commands::scan::ScanArgs),
    /// Run HENDU's services in this process over the store: catalogue
    /// uploads (hash-generator), sensors' samples (communication),
    /// recognition and the filter, on one HTTP address.
    ///
    /// API: POST/GET /v1/musics, GET/DELETE /v1/musics/{id}, GET /v1/claims,
    /// POST /v1/devices/{imei}/samples, POST /v1/devices,
    /// GET/PATCH /v1/devices/{imei}, /v1/tokens, /v1/users;
    /// /healthz, /readyz, /metrics. Every route but the probes and the
    /// device upload needs an API token (hendu token create).
    /// Each service's environment variables apply (see docs/services.md);
    /// HENDU_ADMIN_EMAIL and HENDU_ADMIN_PASSWORD create the first administrator.
    /// Stops cleanly on Ctrl-C or SIGTERM.
    Serve(commands::serve::ServeArgs),
    /// Manage users (musicians, operators, administrators) in the store.
    User(commands::accounts::UserArgs),
    /// Make, list and revoke API tokens (Authorization: Bearer <token>).
    Token(commands::accounts::TokenArgs),
    /// Ask `hendu serve` running here whether it is ready (GET /readyz on
    /// 127.0.0.1 and the port of HENDU_HTTP_ADDR, default 8080); exit 0 on
    /// 200, 1 otherwise. For container health checks.
    Healthcheck(hendu_service::healthcheck::HealthcheckArgs),
}

/// Runs the parsed command; returns the process exit code.
///
/// # Errors
/// Whatever stops the command as a whole (an unreadable store, a full disk).
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Index(args) => commands::index::run(&args),
        Command::Match(args) => commands::matching::run(&args),
        Command::Scan(args) => commands::scan::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::User(args) => commands::accounts::run_user(&args),
        Command::Token(args) => commands::accounts::run_token(&args),
        Command::Healthcheck(args) => Ok(hendu_service::healthcheck::run(
            &args,
            commands::serve::DEFAULT_PORT,
        )),
    }
}
