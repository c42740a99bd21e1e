//! What HENDU stores, and the checks every value passes before it is stored.
//!
//! Constructors (`New*::new`, [`Imei::parse`], ...) validate; the backends only
//! ever see values that passed, so a bad title or IMEI is refused with a typed
//! [`ValidationError`] instead of a database error.

use std::fmt;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Params, Version};
use hendu_fingerprint::blocks::block_count;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{StorageError, ValidationError};

pub type MusicId = i64;
pub type RadioId = i64;
pub type DeviceId = i64;
pub type UserId = i64;
pub type PlayId = i64;

/// Longest title, artist, name or location (characters).
pub const MAX_NAME: usize = 255;
/// Longest stream URL or source path.
pub const MAX_URL: usize = 2048;
/// Longest track accepted (24 h).
pub const MAX_DURATION_MS: u32 = 24 * 3600 * 1000;

fn text(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValidationError::TooLong { field, len, max });
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter { field });
    }
    if spoofs_display(value) {
        return Err(ValidationError::Invisible { field });
    }
    Ok(value.to_owned())
}

/// Bidirectional controls (which reverse the text around them on screen)
/// and invisible characters that can make two different titles look the
/// same, or a title look empty. The zero-width joiner and non-joiner are
/// kept where writing needs them: between two visible characters (Persian
/// words, emoji sequences).
fn spoofs_display(value: &str) -> bool {
    let chars: Vec<char> = value.chars().collect();
    let visible = |c: Option<&char>| c.is_some_and(|c| !c.is_whitespace() && !invisible(*c));
    chars.iter().enumerate().any(|(i, &c)| match c {
        '\u{200c}' | '\u{200d}' => {
            !(i > 0 && visible(chars.get(i - 1)) && visible(chars.get(i + 1)))
        }
        c => invisible(c),
    })
}

fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}'
        | '\u{3164}' | '\u{feff}' | '\u{ffa0}')
}

fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, max).map(Some),
    }
}

/// Truncates to whole milliseconds: every backend keeps milliseconds, so
/// values compare equal after a round trip.
pub fn to_millis(t: OffsetDateTime) -> OffsetDateTime {
    from_unix_ms(unix_ms(t))
}

pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// BLAKE3 of an audio file's bytes, lowercase hex: the identity of the audio.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = String)]
pub struct ContentHash(String);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(blake3::hash(bytes).to_hex().to_string())
    }

    /// # Errors
    /// Anything but 64 lowercase hex digits.
    pub fn parse(hex: &str) -> Result<Self, ValidationError> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(hex.to_owned()))
        } else {
            Err(ValidationError::Range {
                field: "content hash",
                reason: "must be 64 lowercase hex digits".into(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a catalogue entry is in its life. Only `Ready` music is matched:
/// ingestion and deletion move through the other states so that a crash
/// half-way leaves nothing the recogniser would load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MusicState {
    /// Row written, fingerprints and binary being written.
    Ingesting,
    /// Fully stored; the recogniser matches it.
    Ready,
    /// Being removed: no longer matched, fingerprints and binary going.
    Deleting,
    /// Gone from the catalogue; the row stays because plays refer to it.
    Deleted,
}

impl MusicState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingesting => "ingesting",
            Self::Ready => "ready",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StorageError> {
        Ok(match s {
            "ingesting" => Self::Ingesting,
            "ready" => Self::Ready,
            "deleting" => Self::Deleting,
            "deleted" => Self::Deleted,
            other => return Err(StorageError::corrupt(format!("music state {other:?}"))),
        })
    }
}

/// A catalogue track to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMusic {
    pub title: String,
    pub artist: Option<String>,
    pub duration_ms: u32,
    /// Number of 30 s blocks (with 15 s overlap) the duration makes.
    pub blocks: u32,
    pub content_hash: ContentHash,
    /// Where the audio came from: the path given to `hendu index`, or the upload's file name.
    pub source: String,
    pub owner: Option<UserId>,
    /// The recording's ISRC (`CCXXXYYNNNNN`), when its owner gave one.
    pub isrc: Option<String>,
}

/// An ISRC as people write it (`PY-A1B-26-00042` or without the dashes),
/// as stored: twelve upper-case letters and digits.
///
/// # Errors
/// [`ValidationError::Range`] for anything else.
pub fn isrc_code(isrc: Option<&str>) -> Result<Option<String>, ValidationError> {
    let Some(raw) = isrc.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let code: String = raw
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    let shaped = code.is_ascii()
        && code.len() == 12
        && code[..2].bytes().all(|b| b.is_ascii_uppercase())
        && code[2..5].bytes().all(|b| b.is_ascii_alphanumeric())
        && code[5..].bytes().all(|b| b.is_ascii_digit());
    if shaped {
        Ok(Some(code))
    } else {
        Err(ValidationError::Range {
            field: "isrc",
            reason: format!("{raw:?} is not an ISRC such as \"PY-A1B-26-00042\""),
        })
    }
}

impl NewMusic {
    /// # Errors
    /// [`ValidationError`] for an empty or over-long title, artist or source,
    /// or a duration outside (0, 24 h].
    pub fn new(
        title: &str,
        artist: Option<&str>,
        duration_ms: u32,
        content_hash: ContentHash,
        source: &str,
    ) -> Result<Self, ValidationError> {
        if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
            return Err(ValidationError::Range {
                field: "duration",
                reason: format!("{duration_ms} ms is not within (0, 24 h]"),
            });
        }
        Ok(Self {
            title: text("title", title, MAX_NAME)?,
            artist: optional_text("artist", artist, MAX_NAME)?,
            duration_ms,
            blocks: block_count(f64::from(duration_ms) / 1000.0),
            content_hash,
            source: text("source", source, MAX_URL)?,
            owner: None,
            isrc: None,
        })
    }

    /// # Errors
    /// As [`isrc_code`].
    pub fn with_isrc(mut self, isrc: Option<&str>) -> Result<Self, ValidationError> {
        self.isrc = isrc_code(isrc)?;
        Ok(self)
    }
}

/// A catalogue track.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Music {
    pub id: MusicId,
    pub title: String,
    pub artist: Option<String>,
    pub duration_ms: u32,
    pub blocks: u32,
    pub content_hash: ContentHash,
    pub source: String,
    pub owner: Option<UserId>,
    pub isrc: Option<String>,
    pub state: MusicState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A 15-digit IMEI with a valid Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Imei(String);

impl Imei {
    /// # Errors
    /// [`ValidationError::ImeiFormat`] unless 15 ASCII digits;
    /// [`ValidationError::ImeiCheckDigit`] if the Luhn check fails.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        if s.len() != 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::ImeiFormat(s.to_owned()));
        }
        if Self::check_digit(&s[..14]) != s.as_bytes()[14] - b'0' {
            return Err(ValidationError::ImeiCheckDigit(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The Luhn check digit that completes `body`, a string of ASCII digits
    /// (an IMEI's first 14).
    pub fn check_digit(body: &str) -> u8 {
        let sum: u32 = body
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 0 {
                    let d2 = d * 2;
                    if d2 > 9 { d2 - 9 } else { d2 }
                } else {
                    d
                }
            })
            .sum();
        ((10 - sum % 10) % 10) as u8
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Imei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret (password or device key) that never appears in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An argon2id hash in PHC string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHash(pub(crate) String);

impl SecretHash {
    /// Hashes with argon2id (the recommended parameters: 19 MiB, two
    /// passes, one lane) and a random salt, in PHC string form. CPU-heavy:
    /// [`SecretHash::hash`] runs it on the hashing threads.
    ///
    /// # Errors
    /// [`StorageError::Hash`] if the hasher fails.
    pub fn of(secret: &Secret) -> Result<Self, StorageError> {
        let failed = |e: &dyn fmt::Display| StorageError::Hash(e.to_string());
        let salt = SaltString::generate(&mut OsRng);
        let params = Params::default();
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| failed(&e))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        crate::hashing::argon2id(&params, secret.expose().as_bytes(), salt_bytes, &mut out)
            .map_err(|e| failed(&e))?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
        };
        Ok(Self(phc.to_string()))
    }

    /// Whether `secret` is the one hashed (constant-time comparison).
    pub fn verify(&self, secret: &Secret) -> bool {
        let Ok(phc) = PasswordHash::new(&self.0) else {
            return false;
        };
        let (Some(expected), Some(salt)) = (phc.hash, phc.salt) else {
            return false;
        };
        let Ok(params) = Params::try_from(&phc) else {
            return false;
        };
        if phc.algorithm != argon2::ARGON2ID_IDENT
            || phc.version.is_some_and(|v| v != u32::from(Version::V0x13))
        {
            return false;
        }
        let mut salt_buf = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        crate::hashing::argon2id(&params, secret.expose().as_bytes(), salt_bytes, &mut out).is_ok()
            && Output::new(&out).is_ok_and(|o| o == expected)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortest password or device secret accepted.
pub const MIN_SECRET: usize = 12;

fn check_secret(field: &'static str, secret: &Secret) -> Result<(), ValidationError> {
    if secret.expose().chars().count() < MIN_SECRET {
        return Err(ValidationError::TooShort {
            field,
            min: MIN_SECRET,
        });
    }
    if secret.expose().len() > 1024 {
        return Err(ValidationError::TooLong {
            field,
            len: secret.expose().len(),
            max: 1024,
        });
    }
    Ok(())
}

/// An internet radio to monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRadio {
    pub name: String,
    pub stream_url: String,
    pub location: Option<String>,
    /// ISO 3166-1 alpha-2 code, upper case.
    pub country: Option<String>,
    /// The operator the station belongs to.
    pub owner: Option<UserId>,
    pub enabled: bool,
}

impl NewRadio {
    /// An enabled station without a country or operator (see
    /// [`NewRadio::in_country`], [`NewRadio::owned_by`]).
    ///
    /// # Errors
    /// [`ValidationError`] for a bad name or location, or a stream URL that is
    /// not an absolute `http`/`https` URL with a host.
    pub fn new(
        name: &str,
        stream_url: &str,
        location: Option<&str>,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            name: text("name", name, MAX_NAME)?,
            stream_url: stream_url_text(stream_url)?,
            location: optional_text("location", location, MAX_NAME)?,
            country: None,
            owner: None,
            enabled: true,
        })
    }

    /// # Errors
    /// [`ValidationError::Range`] unless `country` is two ASCII letters.
    pub fn in_country(mut self, country: Option<&str>) -> Result<Self, ValidationError> {
        self.country = country_code(country)?;
        Ok(self)
    }

    #[must_use]
    pub fn owned_by(mut self, owner: Option<UserId>) -> Self {
        self.owner = owner;
        self
    }

    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
}

/// An absolute `http`/`https` URL with a host, normalised.
fn stream_url_text(stream_url: &str) -> Result<String, ValidationError> {
    let url_text = text("stream URL", stream_url, MAX_URL)?;
    let bad = |reason: &str| ValidationError::Url {
        url: url_text.clone(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(&url_text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https streams are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(url.to_string())
}

/// An ISO 3166-1 alpha-2 code, upper-cased (`None` for nothing or blank).
fn country_code(country: Option<&str>) -> Result<Option<String>, ValidationError> {
    match country.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Some(c.to_ascii_uppercase()))
        }
        Some(c) => Err(ValidationError::Range {
            field: "country",
            reason: format!("{c:?} is not a two-letter ISO 3166-1 code such as \"PY\""),
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Radio {
    pub id: RadioId,
    pub name: String,
    pub stream_url: String,
    pub location: Option<String>,
    pub country: Option<String>,
    pub owner: Option<UserId>,
    pub enabled: bool,
}

impl Radio {
    /// This station's fields, to change and store again
    /// ([`crate::RelationalStore::update_radio`]).
    pub fn to_new(&self) -> NewRadio {
        NewRadio {
            name: self.name.clone(),
            stream_url: self.stream_url.clone(),
            location: self.location.clone(),
            country: self.country.clone(),
            owner: self.owner,
            enabled: self.enabled,
        }
    }
}

/// What a station is doing, as the replica listening to it last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StationState {
    /// Opening the stream (resolving a playlist, waiting for the first audio).
    Connecting,
    /// Audio flows and samples are cut.
    Streaming,
    /// Audio flows but has been below the silence level for the silence time.
    Silent,
    /// Waiting to reconnect after a drop, a stall or an error.
    Backoff,
    /// Failed to connect for longer than the down time.
    Down,
    /// The stream's codec is one this build cannot decode.
    UnsupportedCodec,
    /// Switched off by an operator.
    Disabled,
}

impl StationState {
    pub const ALL: [StationState; 7] = [
        Self::Connecting,
        Self::Streaming,
        Self::Silent,
        Self::Backoff,
        Self::Down,
        Self::UnsupportedCodec,
        Self::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Silent => "silent",
            Self::Backoff => "backoff",
            Self::Down => "down",
            Self::UnsupportedCodec => "unsupported_codec",
            Self::Disabled => "disabled",
        }
    }

    /// # Errors
    /// [`StorageError::Corrupt`] for a name that is not a state.
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StorageError::corrupt(format!("unknown station state {s:?}")))
    }
}

impl fmt::Display for StationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A station's health, written by the replica listening to it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RadioStatus {
    pub radio_id: RadioId,
    pub state: StationState,
    /// Why, in words (the error, the codec that is not supported).
    pub detail: Option<String>,
    /// Since when the station is in `state`.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The replica listening to it.
    pub holder: Option<String>,
    pub codec: Option<String>,
    /// The stream's current title (ICY `StreamTitle`), a hint only.
    pub title: Option<String>,
    /// Stream bytes per second over the last sample.
    pub bytes_per_s: f64,
    /// Reconnections since the replica took the station.
    pub reconnects: u64,
    /// Samples stored since the replica took the station.
    pub samples: u64,
    /// Seconds of the current silence (0 when not silent).
    pub silence_s: f64,
    /// Where the station's stored samples end: the next sample starts there
    /// or later (a gap), never earlier.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sample_end: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A stretch of a station's programme that no sample covers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RadioGap {
    pub radio_id: RadioId,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: OffsetDateTime,
    /// Why (`disconnected`, `stalled`, `taken_over`, ...).
    pub reason: String,
}

/// A sensor device to register. Its secret is made by the server
/// ([`crate::credentials::new_device_secret`]) and only its digest is kept.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub imei: Imei,
    pub name: String,
    pub location: Option<String>,
    pub secret_digest: CredentialDigest,
    /// For the TCP protocol's login (v2), made from the same secret.
    pub login_verifier: Option<LoginVerifier>,
    pub enabled: bool,
    /// The operator (an event organiser) whose plays it hears.
    pub owner: Option<UserId>,
}

impl NewDevice {
    /// # Errors
    /// [`ValidationError`] for a bad name or location.
    pub fn new(
        imei: Imei,
        name: &str,
        location: Option<&str>,
        secret_digest: CredentialDigest,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            imei,
            name: text("name", name, MAX_NAME)?,
            location: optional_text("location", location, MAX_NAME)?,
            secret_digest,
            login_verifier: None,
            enabled: true,
            owner: None,
        })
    }

    /// The device belongs to `owner`, an operator (an event organiser).
    #[must_use]
    pub fn owned_by(mut self, owner: Option<UserId>) -> Self {
        self.owner = owner;
        self
    }

    #[must_use]
    pub fn with_login_verifier(mut self, verifier: LoginVerifier) -> Self {
        self.login_verifier = Some(verifier);
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: DeviceId,
    pub imei: Imei,
    pub name: String,
    pub location: Option<String>,
    /// `None` when what is stored is not a digest (a device registered
    /// before secrets were made by the server: rotate its secret).
    pub secret_digest: Option<CredentialDigest>,
    /// `None` for a device whose secret was made before the TCP protocol's
    /// login (v2) existed: it signs in over REST and v1, and over v2 once
    /// its secret is rotated.
    pub login_verifier: Option<LoginVerifier>,
    pub enabled: bool,
    /// The operator (an event organiser) whose plays it hears.
    pub owner: Option<UserId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns tracks; sees their plays.
    Musician,
    /// Runs the system.
    Admin,
    /// A rights organisation or station operator: reads the plays and
    /// reports of the sources assigned to it.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Musician => "musician",
            Self::Admin => "admin",
            Self::Operator => "operator",
        }
    }

    /// # Errors
    /// [`ValidationError::Range`] for anything but the three role names.
    pub fn parse_name(s: &str) -> Result<Self, ValidationError> {
        match s.trim() {
            "musician" => Ok(Self::Musician),
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            other => Err(ValidationError::Range {
                field: "role",
                reason: format!("{other:?} is not musician, operator or admin"),
            }),
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StorageError> {
        Self::parse_name(s).map_err(|_| StorageError::corrupt(format!("role {s:?}")))
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password: Secret,
}

impl NewUser {
    /// # Errors
    /// [`ValidationError`] for a malformed e-mail, a bad name, or a password
    /// shorter than [`MIN_SECRET`].
    pub fn new(
        email: &str,
        display_name: &str,
        role: Role,
        password: Secret,
    ) -> Result<Self, ValidationError> {
        let email = text("e-mail", email, 254)?.to_lowercase();
        let well_formed = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
                && !domain.contains('@')
        });
        if !well_formed {
            return Err(ValidationError::Email(email));
        }
        check_secret("password", &password)?;
        Ok(Self {
            email,
            display_name: text("display name", display_name, MAX_NAME)?,
            role,
            password,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: SecretHash,
    /// A disabled user's tokens and password are refused.
    pub disabled: bool,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub public_id: String,
    pub user_id: UserId,
    pub name: String,
    /// The role it acts with: its user's role when it was made. A token
    /// whose user has since changed role is refused.
    pub scope: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub digest: Option<CredentialDigest>,
}

/// A keyed BLAKE3 hash of a credential, as stored (64 hex digits).
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialDigest(blake3::Hash);

impl fmt::Debug for CredentialDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialDigest(***)")
    }
}

impl CredentialDigest {
    /// A stored digest; `None` for anything else (a device registered
    /// before secrets were server-made holds an argon2 hash: it can no
    /// longer sign in until its secret is rotated).
    pub fn parse(stored: &str) -> Option<Self> {
        blake3::Hash::from_hex(stored).ok().map(Self)
    }

    pub(crate) fn from_hash(hash: blake3::Hash) -> Self {
        Self(hash)
    }

    pub(crate) fn hash(&self) -> &blake3::Hash {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }
}

/// What the server keeps to check a device's challenge-response login
/// (the TCP protocol's v2): 32 bytes derived from the device secret, which
/// cannot be turned back into it (64 hex digits when stored).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LoginVerifier(pub [u8; 32]);

impl fmt::Debug for LoginVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginVerifier(***)")
    }
}

impl LoginVerifier {
    /// A stored verifier; `None` for anything but 64 hex digits.
    pub fn parse(stored: &str) -> Option<Self> {
        blake3::Hash::from_hex(stored)
            .ok()
            .map(|h| Self(*h.as_bytes()))
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub public_id: String,
    pub user_id: UserId,
    pub name: String,
    pub scope: Role,
    pub digest: CredentialDigest,
}

impl NewToken {
    /// # Errors
    /// [`ValidationError`] for a bad name.
    /// `public_id` and `digest` as made by [`crate::credentials::issue_token`].
    pub fn new(
        public_id: &str,
        digest: &CredentialDigest,
        user: &User,
        name: &str,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            public_id: public_id.to_owned(),
            user_id: user.id,
            name: text("token name", name, MAX_NAME)?,
            scope: user.role,
            digest: digest.clone(),
        })
    }
}

/// Where a claim on another owner's music stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Pending,
    Granted,
    Rejected,
}

impl ClaimState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Rejected => "rejected",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StorageError> {
        match s {
            "pending" => Ok(Self::Pending),
            "granted" => Ok(Self::Granted),
            "rejected" => Ok(Self::Rejected),
            other => Err(StorageError::corrupt(format!("claim state {other:?}"))),
        }
    }
}

/// A user uploaded audio that already belongs to another owner: recorded
/// for an administrator, who grants it (the music changes owner) or not.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Claim {
    pub id: i64,
    pub music_id: MusicId,
    pub claimant_id: UserId,
    pub state: ClaimState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
}

/// Where samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Source {
    Radio(RadioId),
    Device(DeviceId),
}

impl Source {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Radio(_) => "radio",
            Self::Device(_) => "device",
        }
    }

    pub fn id(self) -> i64 {
        match self {
            Self::Radio(id) | Self::Device(id) => id,
        }
    }

    pub(crate) fn from_parts(kind: &str, id: i64) -> Result<Self, StorageError> {
        match kind {
            "radio" => Ok(Self::Radio(id)),
            "device" => Ok(Self::Device(id)),
            other => Err(StorageError::corrupt(format!("source kind {other:?}"))),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind(), self.id())
    }
}

fn check_key(field: &'static str, key: &str) -> Result<(), ValidationError> {
    if key.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if key.len() > 128 {
        return Err(ValidationError::TooLong {
            field,
            len: key.len(),
            max: 128,
        });
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
    {
        return Err(ValidationError::Charset { field });
    }
    Ok(())
}

/// A play to record: a music heard from a source between two instants.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlay {
    pub music_id: MusicId,
    pub source: Source,
    pub location: Option<String>,
    pub started_at: OffsetDateTime,
    pub ended_at: OffsetDateTime,
    pub score: f64,
    /// Makes a retried write idempotent: the same key records one play.
    pub idempotency_key: String,
}

impl NewPlay {
    /// # Errors
    /// [`ValidationError`] if the play ends before it starts, the score is not
    /// finite, or the key is empty, over 128 bytes or has other characters than
    /// letters, digits, `-_:.`.
    pub fn new(
        music_id: MusicId,
        source: Source,
        location: Option<&str>,
        started_at: OffsetDateTime,
        ended_at: OffsetDateTime,
        score: f64,
        idempotency_key: &str,
    ) -> Result<Self, ValidationError> {
        if ended_at < started_at {
            return Err(ValidationError::Range {
                field: "play",
                reason: "ends before it starts".into(),
            });
        }
        if !score.is_finite() {
            return Err(ValidationError::Range {
                field: "score",
                reason: "not a finite number".into(),
            });
        }
        check_key("idempotency key", idempotency_key)?;
        Ok(Self {
            music_id,
            source,
            location: optional_text("location", location, MAX_NAME)?,
            started_at: to_millis(started_at),
            ended_at: to_millis(ended_at),
            score,
            idempotency_key: idempotency_key.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Play {
    pub id: PlayId,
    pub music_id: MusicId,
    pub source: Source,
    pub location: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: OffsetDateTime,
    pub score: f64,
    pub idempotency_key: String,
}

/// One 30 s catalogue block's fingerprint.
///
/// To store each peak once although blocks overlap by 15 s, a block's document
/// holds the peaks of the frames it *owns*, `[start_frame, end_frame)`: from
/// its start to the next block's start (the last block owns the rest of the
/// track). The peaks of the whole 30 s block are its own and its successor's.
#[derive(Debug, Clone, PartialEq)]
pub struct FingerprintBlock {
    pub music_id: MusicId,
    pub block: u32,
    pub start_frame: u32,
    pub end_frame: u32,
    /// The whole track's length in frames (the same in every block).
    pub track_frames: u32,
    /// Peaks packed by [`hendu_fingerprint::packed`], frames relative to the track.
    pub peaks: Vec<u8>,
}

/// A sample's fingerprint to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSample {
    /// The same source and capture instant always give the same id: an upload
    /// that is retried stores one sample.
    pub id: String,
    pub source: Source,
    pub location: Option<String>,
    pub captured_at: OffsetDateTime,
    pub duration_ms: u32,
    /// Peaks packed by [`hendu_fingerprint::packed`], frames from the sample's start.
    pub peaks: Vec<u8>,
    /// What the source said was playing (a radio's stream title): a hint
    /// for people reading the sample, never used to decide a match.
    pub title: Option<String>,
}

impl NewSample {
    /// # Errors
    /// [`ValidationError`] for a bad location or a duration outside (0, 1 h].
    pub fn new(
        source: Source,
        location: Option<&str>,
        captured_at: OffsetDateTime,
        duration_ms: u32,
        peaks: Vec<u8>,
    ) -> Result<Self, ValidationError> {
        if duration_ms == 0 || duration_ms > 3_600_000 {
            return Err(ValidationError::Range {
                field: "sample duration",
                reason: format!("{duration_ms} ms is not within (0, 1 h]"),
            });
        }
        let captured_at = to_millis(captured_at);
        Ok(Self {
            id: format!("{source}-{}", unix_ms(captured_at)),
            source,
            location: optional_text("location", location, MAX_NAME)?,
            captured_at,
            duration_ms,
            peaks,
            title: None,
        })
    }

    /// The stream title heard with the sample (cut to [`MAX_NAME`]
    /// characters, control characters dropped: it comes from the stream).
    #[must_use]
    pub fn with_title(mut self, title: Option<&str>) -> Self {
        self.title = title.map(clean_hint).filter(|t| !t.is_empty());
        self
    }
}

/// Untrusted free text shown as a hint: controls and spoofing characters
/// dropped, whitespace trimmed, at most [`MAX_NAME`] characters.
pub fn clean_hint(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control() && !invisible(*c))
        .take(MAX_NAME)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Where a stored sample lies in its source's time line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleSpan {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub captured_at: OffsetDateTime,
    pub duration_ms: u32,
    pub title: Option<String>,
}

impl SampleSpan {
    /// The instant the sample's audio ends.
    pub fn end(&self) -> OffsetDateTime {
        self.captured_at + time::Duration::milliseconds(i64::from(self.duration_ms))
    }
}

/// The recogniser's answer for one sample, before the filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawResult {
    pub sample_id: String,
    pub source: Source,
    #[serde(with = "time::serde::rfc3339")]
    pub captured_at: OffsetDateTime,
    /// The sample's length (a play ends at its last sample's end).
    #[serde(default)]
    pub duration_ms: u32,
    /// Where the sample was captured (the play's location).
    #[serde(default)]
    pub location: Option<String>,
    /// `None`: nothing in the catalogue matched.
    pub matched: Option<RawMatch>,
    /// When the store received it (set by the store on reading; ignored on
    /// writing).
    #[serde(default, skip_serializing)]
    pub stored_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawMatch {
    pub music_id: MusicId,
    pub block: u32,
    pub offset_s: f64,
    pub score: f64,
    pub confidence: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isrc_is_stored_in_its_twelve_characters() {
        assert_eq!(
            isrc_code(Some("py-a1b-26-00042")).unwrap().as_deref(),
            Some("PYA1B2600042")
        );
        assert_eq!(
            isrc_code(Some("USRC17607839")).unwrap().as_deref(),
            Some("USRC17607839")
        );
        assert_eq!(isrc_code(Some("  ")).unwrap(), None);
        assert_eq!(isrc_code(None).unwrap(), None);
        for bad in [
            "PYA1B260004",
            "Aé345678901",
            "1YA1B2600042",
            "PYA1B26000X2",
            "PY-A1B-26-000421",
        ] {
            assert!(isrc_code(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn imeis_need_fifteen_digits_and_a_luhn_check_digit() {
        assert!(Imei::parse("490154203237518").is_ok());
        assert!(Imei::parse("356938035643809").is_ok());
        assert_eq!(Imei::check_digit("49015420323751"), 8);
        assert_eq!(Imei::check_digit("35693803564380"), 9);
        assert_eq!(
            Imei::parse("490154203237517"),
            Err(ValidationError::ImeiCheckDigit("490154203237517".into()))
        );
        assert!(matches!(
            Imei::parse("49015420323751"),
            Err(ValidationError::ImeiFormat(_))
        ));
        assert!(matches!(
            Imei::parse("49015420323751x"),
            Err(ValidationError::ImeiFormat(_))
        ));
    }

    #[test]
    fn over_long_titles_and_bad_urls_are_refused() {
        let hash = ContentHash::of(b"x");
        let long = "a".repeat(256);
        assert!(matches!(
            NewMusic::new(&long, None, 1000, hash.clone(), "f.ogg"),
            Err(ValidationError::TooLong {
                field: "title",
                len: 256,
                ..
            })
        ));
        assert!(matches!(
            NewMusic::new("  ", None, 1000, hash, "f.ogg"),
            Err(ValidationError::Empty { field: "title" })
        ));
        assert!(NewRadio::new("R", "ftp://x.org/s", None).is_err());
        assert!(NewRadio::new("R", "not a url", None).is_err());
        assert!(NewRadio::new("R", "https://radio.example.org/live.mp3", Some("Asunción")).is_ok());
    }

    #[test]
    fn titles_that_spoof_the_display_are_refused() {
        let hash = || ContentHash::of(b"x");
        let title = |t: &str| NewMusic::new(t, None, 1000, hash(), "f.ogg").map(|m| m.title);
        for spoof in [
            "\u{202e}3pm.exe",
            "\u{200b}\u{200b}",
            "Gu\u{2067}arania",
            "\u{feff}Himno",
            "Song\u{200d}",
            "\u{3164}",
        ] {
            assert_eq!(
                title(spoof),
                Err(ValidationError::Invisible { field: "title" }),
                "{spoof:?}"
            );
        }
        // Writing that needs the joiners keeps them.
        assert_eq!(title("می\u{200c}خواهم").unwrap(), "می\u{200c}خواهم");
        assert!(title("👩\u{200d}👩\u{200d}👧").is_ok());
        assert!(title("Pájaro Campana").is_ok());
    }

    #[test]
    fn secrets_are_hashed_with_argon2id_and_never_printed() {
        let secret = Secret::new("correct horse battery");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let hash = SecretHash::of(&secret).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(hash.verify(&secret));
        assert!(!hash.verify(&Secret::new("wrong horse battery")));
    }

    #[test]
    fn a_sample_is_named_by_its_source_and_capture_instant() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a = NewSample::new(Source::Device(7), None, at, 30_000, vec![]).unwrap();
        assert_eq!(a.id, "device-7-1700000000000");
    }
}
