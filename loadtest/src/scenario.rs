//! What one request of a run is.
//!
//! - device samples over REST or the sensors' TCP protocol v2, as audio or
//!   as on-device fingerprints, through the device simulator's own client
//!   code (`hendu-sensor`): the same bytes a board sends;
//! - catalogue uploads (a new synthetic track each time);
//! - a plain `GET` of a URL (the generator's own ceiling, against the null
//!   server, or any page).
//!
//! Device samples go round the devices: request `k` is device `k mod n`'s
//! next sample, captured right after its previous one, so each device's
//! samples are a contiguous stretch of its programme and the filter turns
//! them into plays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hendu_sensor::client::{self, Credentials, Failure, V2, Wire};
use hendu_sensor::programme::Prepared;

/// A request's failure, by kind (a short stable word: `http_503`,
/// `refused_busy`, `connection`, `timeout`, ...).
pub type Kind = String;

/// What a successful request delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// For device samples: the device (its number in the run), the
    /// sample's number in the device's programme, and the id the service
    /// gave it.
    pub sample: Option<(usize, u64, String)>,
}

/// One kind of request, fired by number.
pub trait Scenario: Send + Sync + std::fmt::Debug {
    /// Sends request `k`; answers when it is answered.
    fn fire(&self, k: u64) -> BoxFuture<'_, Result<Delivered, Kind>>;
    /// How it is described in the results.
    fn describe(&self) -> serde_json::Value;
}

/// How device samples travel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// `POST /v1/devices/{imei}/samples`, one connection per sample, as a
    /// board writes it.
    Rest,
    /// The TCP protocol v2: each device keeps its session open.
    TcpV2,
}

/// A device of the run.
#[derive(Debug)]
pub struct Device {
    pub credentials: Credentials,
    /// Its next sample's number in its programme.
    next: AtomicU64,
    session: tokio::sync::Mutex<Option<V2>>,
}

impl Device {
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            next: AtomicU64::new(0),
            session: tokio::sync::Mutex::new(None),
        }
    }
}

/// Device samples.
#[derive(Debug)]
pub struct Samples {
    pub transport: Transport,
    pub target: SocketAddr,
    pub devices: Vec<Device>,
    pub programme: Arc<Prepared>,
    /// Where each device's first sample was captured (ms since the epoch).
    pub start_ms: i64,
    /// The start of each sample in one pass of the programme, and the pass.
    offsets_ms: Vec<i64>,
    pass_ms: i64,
    retries: u32,
    /// Resends made.
    resent: AtomicU64,
}

impl Samples {
    pub fn new(
        transport: Transport,
        target: SocketAddr,
        devices: Vec<Device>,
        programme: Arc<Prepared>,
        start_ms: i64,
    ) -> Self {
        let mut offsets_ms = Vec::with_capacity(programme.len());
        let mut at = 0i64;
        for k in 0..programme.len() {
            offsets_ms.push(at);
            at += i64::from(programme.duration_of(k));
        }
        Self {
            transport,
            target,
            devices,
            programme,
            start_ms,
            offsets_ms,
            pass_ms: at,
            retries: 0,
            resent: AtomicU64::new(0),
        }
    }

    /// Resends a sample refused as busy or cut off up to `n` times.
    #[must_use]
    pub fn with_retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// When sample `j` of a device's programme was captured.
    fn captured_ms(&self, j: u64) -> i64 {
        let n = self.offsets_ms.len() as u64;
        self.start_ms + (j / n) as i64 * self.pass_ms + self.offsets_ms[(j % n) as usize]
    }

    async fn send(&self, d: usize) -> Result<Delivered, Kind> {
        let device = &self.devices[d];
        let j = device.next.fetch_add(1, Ordering::Relaxed);
        let sample = self.programme.sample(j as usize, self.captured_ms(j));
        let mut tries = 0;
        loop {
            match self.send_once(d, &sample).await {
                Ok(id) => {
                    return Ok(Delivered {
                        sample: Some((d, j, id)),
                    });
                }
                Err(e) if tries < self.retries => {
                    let wait = match &e {
                        Failure::Refused(r) if matches!(r.number, 429 | 503) => {
                            r.retry_after_s.max(1)
                        }
                        Failure::Io(_) | Failure::Timeout(_) => 1,
                        _ => return Err(kind_of(&e)),
                    };
                    tries += 1;
                    self.resent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(u64::from(wait))).await;
                }
                Err(e) => return Err(kind_of(&e)),
            }
        }
    }

    /// One attempt: the sample's id, or why not.
    async fn send_once(
        &self,
        d: usize,
        sample: &hendu_sensor::programme::Sample,
    ) -> Result<String, Failure> {
        let device = &self.devices[d];
        let mut wire = Wire::default();
        let sent = match self.transport {
            Transport::Rest => {
                client::rest_upload(self.target, &device.credentials, sample, &mut wire).await
            }
            Transport::TcpV2 => {
                // A device sends one sample after another on its session.
                let mut session = device.session.lock().await;
                if session.is_none() {
                    *session = Some(V2::connect(self.target, &device.credentials).await?);
                }
                let result = match session.as_mut() {
                    Some(s) => s.send(sample).await,
                    None => Err(Failure::Protocol("no session".into())),
                };
                let keep = match &result {
                    Ok(_) => true,
                    Err(Failure::Refused(r)) => !r.closing,
                    Err(_) => false,
                };
                if !keep {
                    *session = None;
                }
                result
            }
        };
        sent.map(|ack| ack.sample_id)
    }
}

/// A failure of the device client as a kind.
fn kind_of(e: &Failure) -> Kind {
    match e {
        Failure::Refused(r) => format!("refused_{}", r.name),
        Failure::Io(_) => "connection".into(),
        Failure::Protocol(_) => "protocol".into(),
        Failure::Timeout(_) => "timeout".into(),
    }
}

impl Scenario for Samples {
    fn fire(&self, k: u64) -> BoxFuture<'_, Result<Delivered, Kind>> {
        let d = (k % self.devices.len() as u64) as usize;
        Box::pin(self.send(d))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": "samples",
            "transport": self.transport,
            "target": self.target.to_string(),
            "devices": self.devices.len(),
            "samples_in_programme": self.programme.len(),
            "programme_s": self.pass_ms as f64 / 1000.0,
            "retries": self.retries,
            "resent": self.resent.load(Ordering::Relaxed),
        })
    }
}

/// `GET url`, on a pool of kept-alive connections.
#[derive(Debug)]
pub struct Get {
    pub url: String,
    pub http: reqwest::Client,
}

impl Scenario for Get {
    fn fire(&self, _k: u64) -> BoxFuture<'_, Result<Delivered, Kind>> {
        Box::pin(async move { answered(self.http.get(&self.url).send().await).await })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "scenario": "get", "url": self.url })
    }
}

/// Catalogue uploads: request `k` uploads a new synthetic track.
#[derive(Debug)]
pub struct Uploads {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
    pub seconds: f32,
    /// Seeds start here, so that runs do not upload each other's tracks.
    pub seed_base: u64,
}

impl Scenario for Uploads {
    fn fire(&self, k: u64) -> BoxFuture<'_, Result<Delivered, Kind>> {
        Box::pin(async move {
            let seed = self.seed_base + k;
            let audio =
                hendu_fingerprint::synth::music(seed, self.seconds, hendu_sensor::programme::RATE);
            let wav = hendu_sensor::programme::wav(&audio);
            let form = reqwest::multipart::Form::new()
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(wav).file_name(format!("load-{seed}.wav")),
                )
                .text("title", format!("Load track {seed}"));
            let sent = self
                .http
                .post(&self.url)
                .bearer_auth(&self.token)
                .multipart(form)
                .send()
                .await;
            answered(sent).await
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "scenario": "uploads", "url": self.url, "track_s": self.seconds })
    }
}

/// An HTTP request's outcome, once its whole answer is read (the request
/// is over when its answer is): a success, or its failure as a kind.
async fn answered(sent: reqwest::Result<reqwest::Response>) -> Result<Delivered, Kind> {
    let r = sent.map_err(|e| http_kind(&e))?;
    let status = r.status();
    r.bytes().await.map_err(|e| http_kind(&e))?;
    if status.is_success() {
        Ok(Delivered { sample: None })
    } else {
        Err(format!("http_{}", status.as_u16()))
    }
}

/// A `reqwest` failure as a kind.
pub fn http_kind(e: &reqwest::Error) -> Kind {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection".into()
    } else if let Some(s) = e.status() {
        format!("http_{}", s.as_u16())
    } else {
        "io".into()
    }
}

/// The HTTP client of a run: kept-alive connections, no proxy, a timeout
/// per request.
///
/// # Errors
/// The TLS back-end failing to start.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(4096)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hendu_sensor::programme::{Audio, Kind as SampleKind, RATE};

    #[test]
    fn a_devices_samples_are_contiguous_across_passes() {
        let audio = vec![Audio {
            name: "t".into(),
            samples: vec![0.1; RATE as usize * 25],
        }];
        let programme = Arc::new(Prepared::new(&audio, 10.0, SampleKind::Audio));
        let s = Samples::new(
            Transport::Rest,
            "127.0.0.1:9".parse().unwrap(),
            vec![],
            programme,
            1_000_000,
        );
        // 10 s, 10 s, 5 s, then again.
        let at: Vec<i64> = (0..5).map(|j| s.captured_ms(j)).collect();
        assert_eq!(
            at,
            vec![1_000_000, 1_010_000, 1_020_000, 1_025_000, 1_035_000]
        );
    }
}
