//! What the two SQL stores share: reading rows into records, and telling a
//! retried insert from a clash.

use time::OffsetDateTime;

use crate::credentials::CredentialDigest;
use crate::error::{Result, StorageError};
use crate::model::{
    ApiToken, Claim, ClaimState, ContentHash, Device, Imei, LoginVerifier, Music, MusicState,
    NewRadio, NewUser, Play, Radio, RadioGap, RadioStatus, Role, SecretHash, Source, StationState,
    User,
};
use crate::queries::{Dispute, DisputeState, Grouping, PlayRow, PlayTotal, WebSession};
use crate::repo::Inserted;

/// Typed column access, the one thing MySQL and SQLite rows do differently
/// here: times are `DATETIME(3)` in MySQL and Unix milliseconds in SQLite.
pub(crate) trait SqlRow {
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn count(&self, column: &str) -> Result<u32>;
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn real(&self, column: &str) -> Result<f64>;
    fn time(&self, column: &str) -> Result<OffsetDateTime>;
    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>>;
}

/// The accessors that decode the same way on both databases.
macro_rules! plain_accessors {
    () => {
        fn int(&self, column: &str) -> Result<i64> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn opt_int(&self, column: &str) -> Result<Option<i64>> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn count(&self, column: &str) -> Result<u32> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn text(&self, column: &str) -> Result<String> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn opt_text(&self, column: &str) -> Result<Option<String>> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn flag(&self, column: &str) -> Result<bool> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
        fn real(&self, column: &str) -> Result<f64> {
            Ok(sqlx::Row::try_get(self, column)?)
        }
    };
}
pub(crate) use plain_accessors;

pub(crate) fn music(row: &impl SqlRow) -> Result<Music> {
    Ok(Music {
        id: row.int("id")?,
        title: row.text("title")?,
        artist: row.opt_text("artist")?,
        duration_ms: row.count("duration_ms")?,
        blocks: row.count("blocks")?,
        content_hash: ContentHash::parse(&row.text("content_hash")?)
            .map_err(StorageError::corrupt)?,
        source: row.text("source")?,
        owner: row.opt_int("owner_id")?,
        isrc: row.opt_text("isrc")?,
        state: MusicState::parse(&row.text("state")?)?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(crate) fn radio(row: &impl SqlRow) -> Result<Radio> {
    Ok(Radio {
        id: row.int("id")?,
        name: row.text("name")?,
        stream_url: row.text("stream_url")?,
        location: row.opt_text("location")?,
        country: row.opt_text("country")?,
        owner: row.opt_int("owner_id")?,
        enabled: row.flag("enabled")?,
    })
}

pub(crate) fn radio_status(row: &impl SqlRow) -> Result<RadioStatus> {
    let count =
        |column| -> Result<u64> { u64::try_from(row.int(column)?).map_err(StorageError::corrupt) };
    Ok(RadioStatus {
        radio_id: row.int("radio_id")?,
        state: StationState::parse(&row.text("state")?)?,
        detail: row.opt_text("detail")?,
        since: row.time("since")?,
        holder: row.opt_text("holder")?,
        codec: row.opt_text("codec")?,
        title: row.opt_text("title")?,
        bytes_per_s: row.real("bytes_per_s")?,
        reconnects: count("reconnects")?,
        samples: count("samples")?,
        silence_s: row.real("silence_s")?,
        last_sample_end: row.opt_time("last_sample_end")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(crate) fn radio_gap(row: &impl SqlRow) -> Result<RadioGap> {
    Ok(RadioGap {
        radio_id: row.int("radio_id")?,
        started_at: row.time("started_at")?,
        ended_at: row.time("ended_at")?,
        reason: row.text("reason")?,
    })
}

/// Upserts a station's status (both databases spell the upsert differently:
/// the statement's tail is theirs).
pub(crate) const RADIO_STATUS_COLUMNS: &str = "radio_id, state, detail, since, holder, codec, title, \
     bytes_per_s, reconnects, samples, silence_s, last_sample_end, updated_at";

/// A station that still has plays cannot be deleted: they are what
/// royalties are paid on.
pub(crate) fn radio_has_plays(id: i64) -> StorageError {
    StorageError::Conflict(format!(
        "radio {id} has recorded plays; disable it instead (its plays stay in the reports)"
    ))
}

/// The outcome of a write that names a radio: a foreign-key refusal means
/// the radio was deleted meanwhile (while it was being listened to).
pub(crate) fn radio_write<T>(done: std::result::Result<T, sqlx::Error>, radio: i64) -> Result<()> {
    match done {
        Ok(_) => Ok(()),
        Err(e) if is_foreign_key_violation(&e) => Err(StorageError::not_found("radio", radio)),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn radio_name_taken(name: &str) -> StorageError {
    StorageError::Conflict(format!("a radio named {name:?} already exists"))
}

pub(crate) fn device(row: &impl SqlRow) -> Result<Device> {
    Ok(Device {
        id: row.int("id")?,
        imei: Imei::parse(&row.text("imei")?).map_err(StorageError::corrupt)?,
        name: row.text("name")?,
        location: row.opt_text("location")?,
        secret_digest: CredentialDigest::parse(&row.text("secret_hash")?),
        login_verifier: row
            .opt_text("login_verifier")?
            .as_deref()
            .and_then(LoginVerifier::parse),
        enabled: row.flag("enabled")?,
        owner: row.opt_int("owner_id")?,
    })
}

pub(crate) fn user(row: &impl SqlRow) -> Result<User> {
    Ok(User {
        id: row.int("id")?,
        email: row.text("email")?,
        display_name: row.text("display_name")?,
        role: Role::parse(&row.text("role")?)?,
        password_hash: SecretHash(row.text("password_hash")?),
        disabled: row.flag("disabled")?,
    })
}

pub(crate) fn token(row: &impl SqlRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.int("id")?,
        public_id: row.text("public_id")?,
        user_id: row.int("user_id")?,
        name: row.text("name")?,
        scope: Role::parse(&row.text("scope")?)?,
        created_at: row.time("created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
        revoked_at: row.opt_time("revoked_at")?,
        digest: CredentialDigest::parse(&row.text("digest")?),
    })
}

pub(crate) fn claim(row: &impl SqlRow) -> Result<Claim> {
    Ok(Claim {
        id: row.int("id")?,
        music_id: row.int("music_id")?,
        claimant_id: row.int("claimant_id")?,
        state: ClaimState::parse(&row.text("state")?)?,
        created_at: row.time("created_at")?,
        resolved_at: row.opt_time("resolved_at")?,
    })
}

pub(crate) fn play(row: &impl SqlRow) -> Result<Play> {
    let kind = row.text("source_kind")?;
    let id = row.opt_int(if kind == "radio" {
        "radio_id"
    } else {
        "device_id"
    })?;
    Ok(Play {
        id: row.int("id")?,
        music_id: row.int("music_id")?,
        source: Source::from_parts(&kind, id.unwrap_or_default())?,
        location: row.opt_text("location")?,
        started_at: row.time("started_at")?,
        ended_at: row.time("ended_at")?,
        score: row.real("score")?,
        idempotency_key: row.text("idempotency_key")?,
    })
}

/// The radio and device columns of a play's source.
pub(crate) fn source_columns(source: Source) -> (Option<i64>, Option<i64>) {
    match source {
        Source::Radio(id) => (Some(id), None),
        Source::Device(id) => (None, Some(id)),
    }
}

/// Plays of a source in a time window, by start time (the column is the
/// source's kind, the only part that cannot be a bound parameter).
pub(crate) fn plays_of_source_sql(source: Source) -> &'static str {
    match source {
        Source::Radio(_) => {
            "SELECT * FROM results WHERE radio_id = ? AND started_at >= ? AND started_at < ? \
             ORDER BY started_at, id"
        }
        Source::Device(_) => {
            "SELECT * FROM results WHERE device_id = ? AND started_at >= ? AND started_at < ? \
             ORDER BY started_at, id"
        }
    }
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Whether an insert went in (true) or met an existing unique value (false):
/// a retried write, which the caller then reads back.
pub(crate) fn inserted<T>(result: std::result::Result<T, sqlx::Error>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Plays of a music in a time window, by start time.
pub(crate) const PLAYS_OF_MUSIC_SQL: &str = "SELECT * FROM results WHERE music_id = ? AND started_at >= ? AND started_at < ? \
     ORDER BY started_at, id";

/// A radio whose name was taken: the same radio again (a retry) or a clash.
pub(crate) fn same_radio(found: Radio, new: &NewRadio, created: bool) -> Result<Inserted<Radio>> {
    if created
        || (found.stream_url == new.stream_url
            && found.location == new.location
            && found.country == new.country)
    {
        Ok(Inserted {
            record: found,
            created,
        })
    } else {
        Err(StorageError::Conflict(format!(
            "a radio named {:?} already exists with another stream",
            new.name
        )))
    }
}

/// A device registration that met a registered IMEI. Secrets are made by
/// the server, so a retried registration cannot be told from a second
/// one: both are a conflict (rotate the secret to get a new one).
pub(crate) fn device_taken(imei: &Imei) -> StorageError {
    StorageError::Conflict(format!("device {imei} is already registered"))
}

/// A user whose e-mail was taken: the same sign-up again or a clash.
pub(crate) async fn same_user(found: User, new: &NewUser, created: bool) -> Result<User> {
    if created
        || (found.display_name == new.display_name
            && found.role == new.role
            && found.password_hash.check(&new.password).await)
    {
        Ok(found)
    } else {
        Err(StorageError::Conflict(format!(
            "a user with e-mail {} already exists",
            new.email
        )))
    }
}

pub(crate) fn play_row(row: &impl SqlRow) -> Result<PlayRow> {
    Ok(PlayRow {
        play: play(row)?,
        title: row.text("music_title")?,
        artist: row.opt_text("music_artist")?,
        isrc: row.opt_text("music_isrc")?,
        owner: row.opt_int("music_owner")?,
        operator: row.opt_int("source_operator")?,
        source_name: row.text("source_name")?,
    })
}

pub(crate) fn play_total(row: &impl SqlRow, by: Grouping) -> Result<PlayTotal> {
    let (key, label) = match by {
        Grouping::Day => {
            let day = row.text("k")?;
            (day.clone(), day)
        }
        Grouping::Source => (
            format!("{}:{}", row.text("kind")?, row.int("k")?),
            row.text("label")?,
        ),
        Grouping::Location => {
            let location = row.text("k")?;
            (location.clone(), location)
        }
        Grouping::Track => (row.int("k")?.to_string(), row.text("label")?),
    };
    let millis = row.opt_int("millis")?.unwrap_or_default();
    let (artist, isrc) = match by {
        Grouping::Track => (row.opt_text("artist")?, row.opt_text("isrc")?),
        _ => (None, None),
    };
    Ok(PlayTotal {
        artist,
        isrc,
        key,
        label,
        plays: u64::try_from(row.int("plays")?).unwrap_or_default(),
        seconds: millis as f64 / 1000.0,
    })
}

pub(crate) fn dispute(row: &impl SqlRow) -> Result<Dispute> {
    Ok(Dispute {
        id: row.int("id")?,
        play_id: row.int("play_id")?,
        user_id: row.int("user_id")?,
        reason: row.text("reason")?,
        state: DisputeState::parse(&row.text("state")?)?,
        created_at: row.time("created_at")?,
        resolved_at: row.opt_time("resolved_at")?,
    })
}

pub(crate) fn web_session(row: &impl SqlRow) -> Result<WebSession> {
    Ok(WebSession {
        digest: row.text("digest")?,
        user_id: row.int("user_id")?,
        csrf: row.text("csrf")?,
        created_at: row.time("created_at")?,
        expires_at: row.time("expires_at")?,
    })
}
