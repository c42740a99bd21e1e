//! The `hendu` command as a user runs it: real files, real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hendu_fingerprint::synth::{music, white_noise};
use serde_json::Value;

const RATE: u32 = 22_050;

const SERVER_VARS: [&str; 3] = ["HENDU_MYSQL_URL", "HENDU_MONGO_URL", "HENDU_REDIS_URL"];

fn hendu(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hendu"));
    for var in SERVER_VARS {
        command.env_remove(var);
    }
    command.args(args).output().expect("hendu runs")
}

/// Runs SQL on the embedded store's file (to count or to damage what is stored).
fn sql(store: &str, statement: &str) -> i64 {
    use sqlx::Connection;
    let file = Path::new(store).join("hendu.db");
    let statement = statement.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async move {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(statement))
                .fetch_optional(&mut conn)
                .await
                .unwrap()
                .unwrap_or_default()
        })
}

fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32_000.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

fn seconds(samples: &[f32], from: f32, to: f32) -> &[f32] {
    &samples[(from * RATE as f32) as usize..(to * RATE as f32) as usize]
}

struct Catalogue {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: String,
    tracks: Vec<Vec<f32>>,
}

/// Three 40 s tracks in `music/` (plus a text file), indexed into `store/`.
fn catalogue() -> (Catalogue, Output) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let music_dir = root.join("music");
    std::fs::create_dir_all(music_dir.join("album")).unwrap();
    let tracks: Vec<Vec<f32>> = (1..=3).map(|seed| music(seed, 40.0, RATE)).collect();
    for (i, t) in tracks.iter().enumerate() {
        write_wav(
            &music_dir.join("album").join(format!("track{}.wav", i + 1)),
            t,
        );
    }
    std::fs::write(music_dir.join("notes.txt"), "not audio").unwrap();
    let store = root.join("store").to_string_lossy().into_owned();
    let music_arg = music_dir.to_string_lossy().into_owned();
    let out = hendu(&["index", "--store", &store, "--jobs", "2", &music_arg]);
    (
        Catalogue {
            _dir: dir,
            root,
            store,
            tracks,
        },
        out,
    )
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn index_reports_bad_files_keeps_good_ones_and_never_duplicates() {
    let (c, out) = catalogue();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert!(stderr.contains("indexed 3 new file(s)"), "{stderr}");
    let files = || {
        sql(
            &c.store,
            "SELECT COUNT(*) FROM musics WHERE state = 'ready'",
        )
    };
    assert_eq!(files(), 3);

    let track1 = c.root.join("music/album/track1.wav");
    let copy = c.root.join("copy-of-track1.wav");
    std::fs::copy(&track1, &copy).unwrap();
    let again = hendu(&[
        "index",
        "--store",
        &c.store,
        track1.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("indexed 0 new file(s)"), "{stderr}");
    assert!(stderr.contains("2 already in the store"), "{stderr}");
    assert_eq!(files(), 3);
}

#[test]
fn match_names_the_track_the_block_and_the_offset_or_says_unknown() {
    let (c, _) = catalogue();
    let clip = c.root.join("clip.wav");
    write_wav(&clip, seconds(&c.tracks[1], 22.0, 27.0));
    let unknown = c.root.join("unknown.wav");
    write_wav(&unknown, &music(77, 6.0, RATE));
    let missing = c.root.join("missing.mp3");
    let out = hendu(&[
        "match",
        "--store",
        &c.store,
        "--json",
        clip.to_str().unwrap(),
        unknown.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "a missing query is an error");
    let answers = json_lines(&out);
    assert_eq!(answers.len(), 3);

    assert_eq!(answers[0]["query"], clip.to_str().unwrap());
    let m = &answers[0]["match"];
    assert!(
        m["source"]
            .as_str()
            .unwrap()
            .ends_with("music/album/track2.wav"),
        "{m}"
    );
    assert_eq!(m["title"], "track2");
    assert_eq!(
        m["block"], 1,
        "22-27 s is best covered by the block 15-45 s"
    );
    assert!((m["offset_s"].as_f64().unwrap() - 22.0).abs() < 0.05, "{m}");
    assert!(m["confidence"].as_f64().unwrap() >= 0.5);
    assert!(answers[0]["elapsed_ms"].as_f64().unwrap() > 0.0);

    assert_eq!(answers[1]["match"], Value::Null, "{}", answers[1]);
    assert_eq!(answers[2]["match"], Value::Null);
    assert!(
        answers[2]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read")
    );
}

#[test]
fn scan_finds_each_play_once_with_its_boundaries() {
    let (c, _) = catalogue();
    let mut recording = Vec::new();
    let mut truth = Vec::new();
    let mut append = |samples: &[f32], track: Option<&str>| {
        let start = recording.len() as f64 / f64::from(RATE);
        recording.extend_from_slice(samples);
        if let Some(t) = track {
            truth.push((
                t.to_owned(),
                start,
                recording.len() as f64 / f64::from(RATE),
            ));
        }
    };
    let noise: Vec<f32> = white_noise(5, 8 * RATE as usize)
        .iter()
        .map(|x| x * 0.1)
        .collect();
    append(seconds(&c.tracks[0], 5.0, 25.0), Some("track1"));
    append(seconds(&c.tracks[2], 0.0, 20.0), Some("track3"));
    append(&noise, None);
    append(&music(99, 12.0, RATE), None);
    append(seconds(&c.tracks[1], 10.0, 35.0), Some("track2"));
    let file = c.root.join("broadcast.wav");
    write_wav(&file, &recording);

    let out = hendu(&[
        "scan",
        "--store",
        &c.store,
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out);
    assert_eq!(rows.len(), truth.len(), "{rows:?}");
    for (row, (title, start, end)) in rows.iter().zip(&truth) {
        assert_eq!(row["title"], title.as_str());
        let (s, e) = (
            row["start_s"].as_f64().unwrap(),
            row["end_s"].as_f64().unwrap(),
        );
        assert!((s - start).abs() < 1.0, "{title}: start {s} vs {start}");
        assert!((e - end).abs() < 1.0, "{title}: end {e} vs {end}");
    }
    assert!((rows[0]["offset_s"].as_f64().unwrap() - 5.0).abs() < 1.0);
}

#[test]
fn a_missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = hendu(&["match", "--store", dir.path().to_str().unwrap(), "clip.wav"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a HENDU store"));
}

#[test]
fn the_store_must_be_named_once() {
    let out = hendu(&["match", "clip.wav"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--store DIR, or servers in HENDU_MYSQL_URL"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_hendu"))
        .args(["match", "--store", "somewhere", "clip.wav"])
        .env("HENDU_MYSQL_URL", "mysql://root@127.0.0.1/test")
        .env_remove("HENDU_MONGO_URL")
        .env_remove("HENDU_REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HENDU_MONGO_URL, HENDU_REDIS_URL must be set too"),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_command() {
    let out = hendu(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["index", "match", "scan", "Quick start"] {
        assert!(help.contains(word), "{help}");
    }
    let out = hendu(&["match", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--min-confidence"));
}

#[test]
fn a_damaged_track_is_skipped_with_a_warning_and_the_rest_still_match() {
    let (c, _) = catalogue();
    // One track's second block gets bytes that are not packed peaks.
    sql(
        &c.store,
        "UPDATE music_fingerprints SET peaks = x'01ffffffff' \
         WHERE music_id = (SELECT MIN(music_id) FROM music_fingerprints) AND block = 1",
    );

    let clips: Vec<String> = (0..3)
        .map(|i| {
            let clip = c.root.join(format!("clip{i}.wav"));
            write_wav(&clip, seconds(&c.tracks[i], 10.0, 16.0));
            clip.to_string_lossy().into_owned()
        })
        .collect();
    let mut args = vec!["match", "--store", c.store.as_str(), "--json"];
    args.extend(clips.iter().map(String::as_str));
    let out = hendu(&args);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: skipped"));
    let matched = json_lines(&out)
        .iter()
        .filter(|a| !a["match"].is_null())
        .count();
    assert_eq!(matched, 2, "the two intact tracks still match");
}
