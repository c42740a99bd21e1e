//! A real Icecast server (Debian's `icecast2`) on a free port, fed by
//! `ffmpeg` encoders: the stations the radio monitor's tests listen to.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
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
        let url = self.url(mount);
        let client = reqwest::Client::new();
        let on_air = eventually(Duration::from_secs(30), || async {
            let r = client.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
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
