//! A simulated broadcast and the clients that feed it to the services.
//!
//! The catalogue is four synthetic tracks. The programme plays three of them
//! back to back (one only in part), then music that is not in the catalogue,
//! the fourth track, and noise, all under a light noise floor; a device
//! sends it as 30 s samples, alternately as audio and as on-device
//! fingerprints.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hendu_fingerprint::synth::{mix_at_snr, music, white_noise};
use hendu_fingerprint::wire::MEDIA_TYPE;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const RATE: u32 = hendu_sensor::programme::RATE;
pub const SAMPLE_SECONDS: usize = 30;

/// A catalogue track: its synthesis seed, title and length.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    pub seed: u64,
    pub title: &'static str,
    pub seconds: f32,
}

pub const CATALOGUE: [Track; 4] = [
    Track {
        seed: 11,
        title: "Guarania de la tarde",
        seconds: 90.0,
    },
    Track {
        seed: 12,
        title: "Polca del puerto",
        seconds: 75.0,
    },
    Track {
        seed: 13,
        title: "Canción del río",
        seconds: 120.0,
    },
    Track {
        seed: 14,
        title: "Galopa final",
        seconds: 60.0,
    },
];

/// What a stretch of the programme is.
#[derive(Debug, Clone, Copy)]
pub enum Content {
    /// Catalogue track `index`, from `from_s` seconds into it.
    Catalogue {
        index: usize,
        from_s: f32,
    },
    /// Music that is not in the catalogue.
    Other {
        seed: u64,
    },
    Noise,
    /// Digital silence (dead air), only in [`render_radio`].
    Silence,
}

#[derive(Debug, Clone, Copy)]
pub struct Stretch {
    pub content: Content,
    pub start_s: f32,
    pub seconds: f32,
}

/// The programme: 445 s.
pub fn programme() -> Vec<Stretch> {
    let parts = [
        (Content::Noise, 10.0),
        (
            Content::Catalogue {
                index: 0,
                from_s: 0.0,
            },
            90.0,
        ),
        (
            Content::Catalogue {
                index: 1,
                from_s: 0.0,
            },
            75.0,
        ),
        (
            Content::Catalogue {
                index: 2,
                from_s: 30.0,
            },
            60.0,
        ),
        (Content::Other { seed: 99 }, 90.0),
        (
            Content::Catalogue {
                index: 3,
                from_s: 0.0,
            },
            60.0,
        ),
        (Content::Noise, 60.0),
    ];
    sequence(&parts)
}

/// Stretches of the given contents and lengths (s), back to back from 0.
pub fn sequence(parts: &[(Content, f32)]) -> Vec<Stretch> {
    let mut start = 0.0;
    parts
        .iter()
        .map(|&(content, seconds)| {
            let s = Stretch {
                content,
                start_s: start,
                seconds,
            };
            start += seconds;
            s
        })
        .collect()
}

/// A play the filter should report: catalogue track, start and end (s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub index: usize,
    pub start_s: f32,
    pub end_s: f32,
}

pub fn expected() -> Vec<Expected> {
    programme()
        .into_iter()
        .filter_map(|s| match s.content {
            Content::Catalogue { index, .. } => Some(Expected {
                index,
                start_s: s.start_s,
                end_s: s.start_s + s.seconds,
            }),
            _ => None,
        })
        .collect()
}

/// A catalogue track's audio.
pub fn track_audio(t: &Track) -> Vec<f32> {
    music(t.seed, t.seconds, RATE)
}

/// The programme's audio, under a noise floor 20 dB down.
pub fn render(programme: &[Stretch]) -> Vec<f32> {
    let mut out = Vec::new();
    for s in programme {
        let n = (s.seconds * RATE as f32) as usize;
        let part: Vec<f32> = match s.content {
            Content::Catalogue { index, from_s } => {
                let audio = track_audio(&CATALOGUE[index]);
                let from = (from_s * RATE as f32) as usize;
                audio[from..(from + n).min(audio.len())].to_vec()
            }
            Content::Other { seed } => music(seed, s.seconds, RATE),
            Content::Noise => white_noise(7 + out.len() as u64, n)
                .into_iter()
                .map(|x| x * 0.1)
                .collect(),
            Content::Silence => vec![0.0; n],
        };
        out.extend(part);
    }
    let floor = white_noise(5, out.len());
    mix_at_snr(&out, &floor, 20.0)
}

/// The programme as a station airs it: [`render`], with its silent
/// stretches truly silent (no noise floor: dead air).
pub fn render_radio(programme: &[Stretch]) -> Vec<f32> {
    let mut audio = render(programme);
    for s in programme {
        if matches!(s.content, Content::Silence) {
            let from = (s.start_s * RATE as f32) as usize;
            let to = (((s.start_s + s.seconds) * RATE as f32) as usize).min(audio.len());
            audio[from..to].fill(0.0);
        }
    }
    audio
}

/// 16-bit mono WAV at [`RATE`], as the simulated devices send it.
pub use hendu_sensor::programme::wav;

/// The on-device fingerprint of a stretch of audio at [`RATE`], as a
/// simulated device computes it.
pub fn fingerprint_body(samples: &[f32], captured_at: OffsetDateTime) -> Vec<u8> {
    hendu_sensor::programme::fingerprint(
        samples,
        (captured_at.unix_timestamp_nanos() / 1_000_000) as i64,
    )
}

/// How a sample travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Audio,
    Fingerprint,
}

/// A sample ready to send.
#[derive(Debug, Clone)]
pub struct Sample {
    pub captured_at: OffsetDateTime,
    pub body: Body,
    pub bytes: Vec<u8>,
}

/// The programme cut into 30 s samples captured from `t0` on, odd ones
/// fingerprinted on the device, even ones sent as audio.
pub fn samples(audio: &[f32], t0: OffsetDateTime) -> Vec<Sample> {
    audio
        .chunks(SAMPLE_SECONDS * RATE as usize)
        .enumerate()
        .map(|(k, chunk)| {
            let captured_at = t0 + Duration::from_secs((k * SAMPLE_SECONDS) as u64);
            if k % 2 == 0 {
                Sample {
                    captured_at,
                    body: Body::Audio,
                    bytes: wav(chunk),
                }
            } else {
                Sample {
                    captured_at,
                    body: Body::Fingerprint,
                    bytes: fingerprint_body(chunk, captured_at),
                }
            }
        })
        .collect()
}

/// Talks to the hash-generator and the communication service.
#[derive(Debug, Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub hash_generator: String,
    pub communication: String,
    /// The administrator's API token, obtained with the password on first use.
    token: tokio::sync::OnceCell<String>,
}

pub const ADMIN_EMAIL: &str = "admin@hendu.test";
pub const ADMIN_PASSWORD: &str = "a long admin password";

impl Client {
    pub fn new(hash_generator: &str, communication: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            hash_generator: hash_generator.to_owned(),
            communication: communication.to_owned(),
            token: tokio::sync::OnceCell::new(),
        }
    }

    /// The administrator's token, as a person gets one: e-mail and password.
    pub async fn token(&self) -> Result<&str> {
        self.token
            .get_or_try_init(|| async {
                let r = self
                    .http
                    .post(format!("{}/v1/tokens", self.communication))
                    .basic_auth(ADMIN_EMAIL, Some(ADMIN_PASSWORD))
                    .json(&json!({ "name": "e2e" }))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("cannot sign in: {}", r.text().await?);
                }
                let body: Value = r.json().await?;
                body["token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no token in the answer")
            })
            .await
            .map(String::as_str)
    }

    /// Uploads a catalogue track; returns its music id.
    pub async fn upload(&self, t: &Track) -> Result<i64> {
        self.upload_for(t, None).await
    }

    /// Uploads a catalogue track owned by the musician `owner`.
    pub async fn upload_for(&self, t: &Track, owner: Option<i64>) -> Result<i64> {
        let mut form = Form::new()
            .part(
                "file",
                Part::bytes(wav(&track_audio(t))).file_name(format!("{}.wav", t.seed)),
            )
            .text("title", t.title);
        if let Some(owner) = owner {
            form = form.text("owner_id", owner.to_string());
        }
        let r = self
            .http
            .post(format!("{}/v1/musics", self.hash_generator))
            .bearer_auth(self.token().await?)
            .multipart(form)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("upload of {} failed: {}", t.title, r.text().await?);
        }
        let body: Value = r.json().await?;
        body["id"].as_i64().context("no id in the upload's answer")
    }

    /// Creates a user as the administrator; returns its id.
    pub async fn create_user(&self, email: &str, role: &str, password: &str) -> Result<i64> {
        let r = self
            .http
            .post(format!("{}/v1/users", self.communication))
            .bearer_auth(self.token().await?)
            .json(&json!({ "email": email, "display_name": email, "role": role, "password": password }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("cannot create {email}: {}", r.text().await?);
        }
        let body: Value = r.json().await?;
        body["id"].as_i64().context("no id in the answer")
    }

    /// Registers a device as the administrator; returns its id and the
    /// secret the server made for it.
    pub async fn register_device(&self, imei: &str) -> Result<(i64, String)> {
        let r = self
            .http
            .post(format!("{}/v1/devices", self.communication))
            .bearer_auth(self.token().await?)
            .json(&json!({ "imei": imei, "name": "Sensor", "location": "Asunción" }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("registration failed: {}", r.text().await?);
        }
        let body: Value = r.json().await?;
        let id = body["id"]
            .as_i64()
            .context("no id in the registration's answer")?;
        let secret = body["secret"]
            .as_str()
            .context("no secret in the registration's answer")?;
        Ok((id, secret.to_owned()))
    }

    /// Sends one sample; returns the HTTP status.
    pub async fn send(&self, imei: &str, secret: &str, sample: &Sample) -> Result<u16> {
        let mut request = self
            .http
            .post(format!("{}/v1/devices/{imei}/samples", self.communication))
            .header("x-hendu-device-secret", secret)
            .body(sample.bytes.clone());
        request = match sample.body {
            Body::Audio => request
                .header("content-type", "audio/wav")
                .header("x-hendu-captured-at", sample.captured_at.format(&Rfc3339)?),
            Body::Fingerprint => request.header("content-type", MEDIA_TYPE),
        };
        Ok(request.send().await?.status().as_u16())
    }
}
