//! A real Icecast server (Debian's `icecast2`) on a free port, fed by
//! `ffmpeg` encoders: the stations the radio monitor's tests listen to.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hendu_storage::Storage;
use hendu_storage::model::{Play, SampleSpan, Source};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::process::{Child, Command};

use crate::{eventually, free_port};

pub const SOURCE_PASSWORD: &str = "hendu-source";

/// An Icecast server, killed when dropped.
#[derive(Debug)]
pub struct Icecast {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// How a mount is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Mp3,
    Vorbis,
    Opus,
    AacAdts,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Mp3, Codec::Vorbis, Codec::Opus, Codec::AacAdts];

    pub fn mount(self) -> &'static str {
        match self {
            Codec::Mp3 => "/live.mp3",
            Codec::Vorbis => "/live.ogg",
            Codec::Opus => "/live.opus",
            Codec::AacAdts => "/live.aac",
        }
    }

    fn ffmpeg_args(self) -> &'static [&'static str] {
        match self {
            Codec::Mp3 => &[
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                "-content_type",
                "audio/mpeg",
                "-f",
                "mp3",
            ],
            Codec::Vorbis => &[
                "-c:a",
                "libvorbis",
                "-b:a",
                "128k",
                "-content_type",
                "application/ogg",
                "-f",
                "ogg",
            ],
            Codec::Opus => &[
                "-ar",
                "48000",
                "-c:a",
                "libopus",
                "-b:a",
                "64k",
                "-content_type",
                "audio/ogg",
                "-f",
                "ogg",
            ],
            Codec::AacAdts => &[
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-content_type",
                "audio/aac",
                "-f",
                "adts",
            ],
        }
    }
}

fn need(tool: &str, package: &str) -> Result<()> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!(
            "{tool} is not installed (Debian: apt-get install {package}); scripts/test.sh installs it"
        );
    }
    Ok(())
}

impl Icecast {
    /// Starts a server with a generated configuration and waits for it.
    pub async fn start() -> Result<Self> {
        need("icecast2", "icecast2")?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let log = dir.path().join("log");
        std::fs::create_dir_all(&log)?;
        // Icecast refuses to run as root unless it may drop to a user.
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let security = if as_root {
            // The log folder must be the server's once it has dropped root.
            let _ = std::process::Command::new("chown")
                .args(["-R", "icecast2", &log.to_string_lossy()])
                .status();
            "<security><chroot>0</chroot><changeowner><user>icecast2</user><group>icecast</group></changeowner></security>"
        } else {
            "<security><chroot>0</chroot></security>"
        };
        let config = format!(
            "<icecast>
  <location>test</location><admin>test@localhost</admin>
  <limits><clients>200</clients><sources>50</sources><burst-size>65536</burst-size>
    <source-timeout>10</source-timeout></limits>
  <authentication><source-password>{SOURCE_PASSWORD}</source-password>
    <admin-user>admin</admin-user><admin-password>hendu-admin</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <paths><logdir>{}</logdir><webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  {security}
</icecast>",
            log.display()
        );
        let path = dir.path().join("icecast.xml");
        std::fs::write(&path, config)?;
        let child = Command::new("icecast2")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start icecast2")?;
        let server = Self { port, child, dir };
        let up = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        if up.is_none() {
            bail!("icecast2 did not listen on port {port}");
        }
        Ok(server)
    }

    pub fn url(&self, mount: &str) -> String {
        format!("http://127.0.0.1:{}{mount}", self.port)
    }

    /// Streams `wav` to `mount` with ffmpeg, `speed` times faster than it
    /// plays (1.0: in real time); returns once the mount is on air.
    pub async fn feed(&self, mount: &str, codec: Codec, wav: &Path, speed: f64) -> Result<Feeder> {
        self.feed_with(mount, codec, wav, speed, false).await
    }

    /// [`Icecast::feed`], the file played again and again when `looped`.
    pub async fn feed_with(
        &self,
        mount: &str,
        codec: Codec,
        wav: &Path,
        speed: f64,
        looped: bool,
    ) -> Result<Feeder> {
        let mut args = vec!["-ar", "44100", "-ac", "2"];
        args.extend_from_slice(codec.ffmpeg_args());
        self.ffmpeg(mount, wav, speed, looped, &args).await
    }

    /// Relays an MP3 file to `mount` as it is (no encoding: cheap enough
    /// for many stations at once).
    pub async fn relay(&self, mount: &str, mp3: &Path, speed: f64) -> Result<Feeder> {
        let args = ["-c:a", "copy", "-content_type", "audio/mpeg", "-f", "mp3"];
        self.ffmpeg(mount, mp3, speed, false, &args).await
    }

    async fn ffmpeg(
        &self,
        mount: &str,
        input: &Path,
        speed: f64,
        looped: bool,
        output: &[&str],
    ) -> Result<Feeder> {
        need("ffmpeg", "ffmpeg")?;
        let target = format!(
            "icecast://source:{SOURCE_PASSWORD}@127.0.0.1:{}{mount}",
            self.port
        );
        let log = self
            .dir
            .path()
            .join(format!("ffmpeg{}.log", mount.replace('/', "-")));
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "error",
                "-readrate",
                &speed.to_string(),
            ])
            .args(if looped {
                &["-stream_loop", "-1"][..]
            } else {
                &[][..]
            })
            .arg("-i")
            .arg(input)
            .args(output)
            .arg(&target)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start ffmpeg")?;
        // On air once the server lists the mount with its source: from its
        // statistics, not by listening (a listener of the test's own would
        // count against the one-listener-per-station checks for a while
        // after it has gone).
        let on_air = eventually(Duration::from_secs(30), || async {
            listeners(self.port)
                .await
                .ok()?
                .iter()
                .any(|(m, _)| m == mount)
                .then_some(())
        })
        .await;
        if on_air.is_none() {
            bail!(
                "{mount} did not go on air: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(Feeder { child, log })
    }

    /// The server's error log (for a failing test's message).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/error.log")).unwrap_or_default()
    }
}

impl Drop for Icecast {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Runs ffmpeg, quiet and overwriting, with `args`.
pub fn ffmpeg(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .context("ffmpeg is not installed (Debian: apt-get install ffmpeg)")?;
    if !out.status.success() {
        bail!("ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// ffmpeg's input options for `wav` played as a station plays it: 44.1 kHz
/// stereo (the output's codec options follow).
pub fn station_input(wav: &str) -> [&str; 6] {
    ["-i", wav, "-ar", "44100", "-ac", "2"]
}

/// Encodes `wav` into `mp3` as a station sends it (128 kbit/s, 44.1 kHz
/// stereo), with `extra` output options.
pub fn encode_mp3(wav: &Path, mp3: &Path, extra: &[&str]) -> Result<()> {
    let wav = wav.to_str().context("a UTF-8 path")?;
    let mp3 = mp3.to_str().context("a UTF-8 path")?;
    let mut args = station_input(wav).to_vec();
    args.extend_from_slice(&["-c:a", "libmp3lame", "-b:a", "128k"]);
    args.extend_from_slice(extra);
    args.push(mp3);
    ffmpeg(&args)
}

/// A station's stored samples (from two hours ago to two hours ahead).
pub async fn station_samples(storage: &Storage, radio: i64) -> Vec<SampleSpan> {
    let now = OffsetDateTime::now_utc();
    storage
        .documents
        .sample_spans(
            Source::Radio(radio),
            now - time::Duration::hours(2),
            now + time::Duration::hours(2),
            1000,
        )
        .await
        .unwrap_or_default()
}

/// A station's plays in `results` (from two hours ago to two hours ahead).
pub async fn station_plays(storage: &Storage, radio: i64) -> Vec<Play> {
    let now = OffsetDateTime::now_utc();
    storage
        .relational
        .plays_of_source(
            Source::Radio(radio),
            now - time::Duration::hours(2),
            now + time::Duration::hours(2),
        )
        .await
        .unwrap_or_default()
}

/// Waits up to `within` for at least `at_least` plays of every station in
/// `radios` with no raw result left undecided; the plays, or what each
/// station had when the time ran out.
pub async fn plays_of_every_station(
    storage: &Storage,
    radios: &[i64],
    at_least: usize,
    within: Duration,
) -> std::result::Result<Vec<Vec<Play>>, Vec<Vec<Play>>> {
    let all = eventually(within, || async {
        let mut all = Vec::new();
        for &id in radios {
            let plays = station_plays(storage, id).await;
            if plays.len() < at_least {
                return None;
            }
            all.push(plays);
        }
        storage
            .documents
            .raw_result_sources()
            .await
            .ok()?
            .is_empty()
            .then_some(all)
    })
    .await;
    match all {
        Some(all) => Ok(all),
        None => {
            let mut seen = Vec::new();
            for &id in radios {
                seen.push(station_plays(storage, id).await);
            }
            Err(seen)
        }
    }
}

/// Every station's health from the monitor at `base` (`GET
/// /v1/radios/health`), as `token`.
pub async fn health(http: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    http.get(format!("{base}/v1/radios/health"))
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("the monitor answers the health list")
        .json()
        .await
        .expect("the health list is JSON")
}

/// Listeners per mount of the Icecast server on `port`, from its statistics.
pub async fn listeners(port: u16) -> Result<Vec<(String, u32)>> {
    let xml = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/admin/stats"))
        .basic_auth("admin", Some("hendu-admin"))
        .send()
        .await?
        .text()
        .await?;
    let mut out = Vec::new();
    for source in xml.split("<source mount=\"").skip(1) {
        let mount = source.split('"').next().unwrap_or_default().to_owned();
        let listeners = source
            .split("<listeners>")
            .nth(1)
            .and_then(|l| l.split('<').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        out.push((mount, listeners));
    }
    Ok(out)
}

/// An ffmpeg encoder feeding a mount, killed when dropped.
#[derive(Debug)]
pub struct Feeder {
    pub child: Child,
    pub log: PathBuf,
}
