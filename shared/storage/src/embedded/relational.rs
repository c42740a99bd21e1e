//! [`RelationalStore`] on the SQLite file (times as Unix milliseconds).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use super::SqliteStore;
use crate::credentials::CredentialDigest;
use crate::error::{Result, StorageError};
use crate::leases::Fence;
use crate::model::{
    ApiToken, Claim, ClaimState, ContentHash, Device, Imei, LoginVerifier, Music, MusicId,
    MusicState, NewDevice, NewMusic, NewPlay, NewRadio, NewToken, NewUser, Play, PlayId, Radio,
    RadioGap, RadioId, RadioStatus, SecretHash, Source, User, UserId, from_unix_ms, unix_ms,
};
use crate::queries::{
    Arg, Dialect, Dispute, DisputeState, Grouping, PlayFilter, PlayPage, PlayRow, PlaySql,
    PlayTotal, WebSession,
};
use crate::relational::{
    self, PLAYS_OF_MUSIC_SQL, RADIO_STATUS_COLUMNS, SqlRow, claim, device, inserted,
    is_foreign_key_violation, music, play, plays_of_source_sql, radio, radio_gap, radio_status,
    source_columns, token, user,
};
use crate::relational::{dispute, play_row, play_total, web_session};
use crate::repo::{Inserted, RelationalStore};

/// `q`'s statement with its values bound.
fn bound(
    q: &PlaySql,
) -> sqlx::query::Query<'_, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments> {
    q.args.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(q.sql.as_str())),
        |query, arg| match arg {
            Arg::Int(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::Time(v) => query.bind(unix_ms(*v)),
        },
    )
}

fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// In `tx` (which holds the write lock): raises the fence of `fence.name`
/// to its token, or fails if a larger token has written.
async fn fenced(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, fence: &Fence) -> Result<()> {
    let current: i64 = sqlx::query_scalar(
        "INSERT INTO fences (name, token) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET token = MAX(token, excluded.token) RETURNING token",
    )
    .bind(&fence.name)
    .bind(fence.token as i64)
    .fetch_one(&mut **tx)
    .await?;
    if current as u64 > fence.token {
        return Err(StorageError::Fenced(fence.name.clone()));
    }
    Ok(())
}

/// Records a play on `conn` (a transaction or not); a key already recorded
/// gives back that play.
async fn insert_play(conn: &mut sqlx::SqliteConnection, new: &NewPlay) -> Result<Inserted<Play>> {
    let (radio_id, device_id) = source_columns(new.source);
    let created = inserted(
        sqlx::query(
            "INSERT INTO results (music_id, source_kind, radio_id, device_id, location, \
             started_at, ended_at, score, idempotency_key, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.music_id)
        .bind(new.source.kind())
        .bind(radio_id)
        .bind(device_id)
        .bind(&new.location)
        .bind(unix_ms(new.started_at))
        .bind(unix_ms(new.ended_at))
        .bind(new.score)
        .bind(&new.idempotency_key)
        .bind(now_ms())
        .execute(&mut *conn)
        .await,
    )?;
    let row = sqlx::query("SELECT * FROM results WHERE idempotency_key = ?")
        .bind(&new.idempotency_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Inserted {
        record: play(&row)?,
        created,
    })
}

impl SqlRow for SqliteRow {
    relational::plain_accessors!();

    fn time(&self, column: &str) -> Result<OffsetDateTime> {
        Ok(from_unix_ms(self.try_get(column)?))
    }

    fn opt_time(&self, column: &str) -> Result<Option<OffsetDateTime>> {
        Ok(self.try_get::<Option<i64>, _>(column)?.map(from_unix_ms))
    }
}

#[async_trait]
impl RelationalStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_music(&self, new: &NewMusic) -> Result<Inserted<Music>> {
        // BEGIN IMMEDIATE takes the write lock first: the read and the write
        // below are one step for every other connection.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query("SELECT id, state FROM musics WHERE content_hash = ?")
            .bind(new.content_hash.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let now = now_ms();
        let (id, created) = match existing {
            Some(row) => {
                let id: i64 = row.try_get("id")?;
                let state = MusicState::parse(row.try_get("state")?)?;
                if state == MusicState::Deleted {
                    sqlx::query(
                        "UPDATE musics SET title = ?, artist = ?, duration_ms = ?, blocks = ?, \
                         source = ?, owner_id = ?, isrc = ?, state = 'ingesting', updated_at = ? \
                         WHERE id = ?",
                    )
                    .bind(&new.title)
                    .bind(&new.artist)
                    .bind(new.duration_ms)
                    .bind(new.blocks)
                    .bind(&new.source)
                    .bind(new.owner)
                    .bind(&new.isrc)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                (id, state == MusicState::Deleted)
            }
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO musics (title, artist, duration_ms, blocks, content_hash, source, \
                     owner_id, isrc, state, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ingesting', ?, ?) RETURNING id",
                )
                .bind(&new.title)
                .bind(&new.artist)
                .bind(new.duration_ms)
                .bind(new.blocks)
                .bind(new.content_hash.as_str())
                .bind(&new.source)
                .bind(new.owner)
                .bind(&new.isrc)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                (id, true)
            }
        };
        tx.commit().await?;
        let record = self
            .music(id)
            .await?
            .ok_or_else(|| StorageError::not_found("music", id))?;
        Ok(Inserted { record, created })
    }

    async fn set_music_state(&self, id: MusicId, from: MusicState, to: MusicState) -> Result<bool> {
        let done =
            sqlx::query("UPDATE musics SET state = ?, updated_at = ? WHERE id = ? AND state = ?")
                .bind(to.as_str())
                .bind(now_ms())
                .bind(id)
                .bind(from.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn music(&self, id: MusicId) -> Result<Option<Music>> {
        let row = sqlx::query("SELECT * FROM musics WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(music).transpose()
    }

    async fn music_by_hash(&self, hash: &ContentHash) -> Result<Option<Music>> {
        let row = sqlx::query("SELECT * FROM musics WHERE content_hash = ?")
            .bind(hash.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(music).transpose()
    }

    async fn musics(&self, state: MusicState, after: MusicId, limit: u32) -> Result<Vec<Music>> {
        let rows =
            sqlx::query("SELECT * FROM musics WHERE state = ? AND id > ? ORDER BY id LIMIT ?")
                .bind(state.as_str())
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(music).collect()
    }

    async fn add_radio(&self, new: &NewRadio) -> Result<Inserted<Radio>> {
        let now = now_ms();
        let created = inserted(
            sqlx::query(
                "INSERT INTO radios (name, stream_url, location, country, owner_id, enabled, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.name)
            .bind(&new.stream_url)
            .bind(&new.location)
            .bind(&new.country)
            .bind(new.owner)
            .bind(new.enabled)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await,
        )?;
        let row = sqlx::query("SELECT * FROM radios WHERE name = ?")
            .bind(&new.name)
            .fetch_one(&self.pool)
            .await?;
        relational::same_radio(radio(&row)?, new, created)
    }

    async fn radios(&self) -> Result<Vec<Radio>> {
        let rows = sqlx::query("SELECT * FROM radios ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(radio).collect()
    }

    async fn radio(&self, id: RadioId) -> Result<Option<Radio>> {
        let row = sqlx::query("SELECT * FROM radios WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(radio).transpose()
    }

    async fn update_radio(&self, id: RadioId, new: &NewRadio) -> Result<Option<Radio>> {
        let done = sqlx::query(
            "UPDATE radios SET name = ?, stream_url = ?, location = ?, country = ?, owner_id = ?, \
             enabled = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&new.name)
        .bind(&new.stream_url)
        .bind(&new.location)
        .bind(&new.country)
        .bind(new.owner)
        .bind(new.enabled)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if relational::is_unique_violation(&e) => {
                Err(relational::radio_name_taken(&new.name))
            }
            Err(e) => Err(e.into()),
            Ok(_) => self.radio(id).await,
        }
    }

    async fn delete_radio(&self, id: RadioId) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let played = sqlx::query("SELECT 1 FROM results WHERE radio_id = ? LIMIT 1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if played.is_some() {
            return Err(relational::radio_has_plays(id));
        }
        let done = sqlx::query("DELETE FROM radios WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_radio_status(&self, s: &RadioStatus) -> Result<()> {
        let sql = format!(
            "INSERT INTO radio_status ({RADIO_STATUS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (radio_id) DO UPDATE SET state = excluded.state, detail = excluded.detail, \
             since = excluded.since, holder = excluded.holder, codec = excluded.codec, \
             title = excluded.title, bytes_per_s = excluded.bytes_per_s, \
             reconnects = excluded.reconnects, samples = excluded.samples, \
             silence_s = excluded.silence_s, last_sample_end = excluded.last_sample_end, \
             updated_at = excluded.updated_at"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(s.radio_id)
            .bind(s.state.as_str())
            .bind(&s.detail)
            .bind(unix_ms(s.since))
            .bind(&s.holder)
            .bind(&s.codec)
            .bind(&s.title)
            .bind(s.bytes_per_s)
            .bind(i64::try_from(s.reconnects).unwrap_or(i64::MAX))
            .bind(i64::try_from(s.samples).unwrap_or(i64::MAX))
            .bind(s.silence_s)
            .bind(s.last_sample_end.map(unix_ms))
            .bind(unix_ms(s.updated_at))
            .execute(&self.pool)
            .await;
        relational::radio_write(done, s.radio_id)
    }

    async fn radio_statuses(&self) -> Result<Vec<RadioStatus>> {
        let rows = sqlx::query("SELECT * FROM radio_status ORDER BY radio_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(radio_status).collect()
    }

    async fn add_radio_gap(&self, gap: &RadioGap) -> Result<()> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO radio_gaps (radio_id, started_at, ended_at, reason) VALUES (?, ?, ?, ?)",
        )
        .bind(gap.radio_id)
        .bind(unix_ms(gap.started_at))
        .bind(unix_ms(gap.ended_at))
        .bind(&gap.reason)
        .execute(&self.pool)
        .await;
        relational::radio_write(done, gap.radio_id)
    }

    async fn radio_gaps(
        &self,
        radio: RadioId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<RadioGap>> {
        let rows = sqlx::query(
            "SELECT * FROM radio_gaps WHERE radio_id = ? AND started_at >= ? AND started_at < ? \
             ORDER BY started_at",
        )
        .bind(radio)
        .bind(unix_ms(from))
        .bind(unix_ms(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(radio_gap).collect()
    }

    async fn add_device(&self, new: &NewDevice) -> Result<Device> {
        let created = inserted(
            sqlx::query(
                "INSERT INTO devices (imei, name, location, secret_hash, login_verifier, enabled, \
                 owner_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(new.imei.as_str())
            .bind(&new.name)
            .bind(&new.location)
            .bind(new.secret_digest.to_hex())
            .bind(new.login_verifier.map(|v| v.to_hex()))
            .bind(new.enabled)
            .bind(new.owner)
            .bind(now_ms())
            .execute(&self.pool)
            .await,
        )?;
        if !created {
            return Err(relational::device_taken(&new.imei));
        }
        self.device_by_imei(&new.imei)
            .await?
            .ok_or_else(|| StorageError::not_found("device", &new.imei))
    }

    async fn devices(&self, after: i64, limit: u32) -> Result<Vec<Device>> {
        let rows = sqlx::query("SELECT * FROM devices WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device).collect()
    }

    async fn device_by_imei(&self, imei: &Imei) -> Result<Option<Device>> {
        let row = sqlx::query("SELECT * FROM devices WHERE imei = ?")
            .bind(imei.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device).transpose()
    }

    async fn set_device_enabled(&self, imei: &Imei, enabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE devices SET enabled = ? WHERE imei = ?")
            .bind(enabled)
            .bind(imei.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_device_owner(&self, imei: &Imei, owner: Option<UserId>) -> Result<bool> {
        let done = sqlx::query("UPDATE devices SET owner_id = ? WHERE imei = ?")
            .bind(owner)
            .bind(imei.as_str())
            .execute(&self.pool)
            .await;
        match done {
            Ok(done) => Ok(done.rows_affected() == 1 || self.device_by_imei(imei).await?.is_some()),
            Err(e) if relational::is_foreign_key_violation(&e) => {
                Err(StorageError::not_found("user", owner.unwrap_or_default()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn devices_owned(&self, owner: UserId, after: i64, limit: u32) -> Result<Vec<Device>> {
        let rows =
            sqlx::query("SELECT * FROM devices WHERE owner_id = ? AND id > ? ORDER BY id LIMIT ?")
                .bind(owner)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(device).collect()
    }

    async fn set_device_secret(
        &self,
        imei: &Imei,
        digest: &CredentialDigest,
        verifier: &LoginVerifier,
    ) -> Result<bool> {
        let done =
            sqlx::query("UPDATE devices SET secret_hash = ?, login_verifier = ? WHERE imei = ?")
                .bind(digest.to_hex())
                .bind(verifier.to_hex())
                .bind(imei.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn musics_owned(
        &self,
        owner: UserId,
        state: MusicState,
        after: MusicId,
        limit: u32,
    ) -> Result<Vec<Music>> {
        let rows = sqlx::query(
            "SELECT * FROM musics WHERE owner_id = ? AND state = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(owner)
        .bind(state.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(music).collect()
    }

    async fn add_claim(&self, music_id: MusicId, claimant: UserId) -> Result<Inserted<Claim>> {
        let created = inserted(
            sqlx::query(
                "INSERT INTO music_claims (music_id, claimant_id, created_at) VALUES (?, ?, ?)",
            )
            .bind(music_id)
            .bind(claimant)
            .bind(now_ms())
            .execute(&self.pool)
            .await,
        )?;
        let row = sqlx::query("SELECT * FROM music_claims WHERE music_id = ? AND claimant_id = ?")
            .bind(music_id)
            .bind(claimant)
            .fetch_one(&self.pool)
            .await?;
        Ok(Inserted {
            record: claim(&row)?,
            created,
        })
    }

    async fn claims(&self, state: ClaimState, after: i64, limit: u32) -> Result<Vec<Claim>> {
        let rows = sqlx::query(
            "SELECT * FROM music_claims WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(state.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(claim).collect()
    }

    async fn resolve_claim(&self, id: i64, grant: bool) -> Result<Option<Claim>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) =
            sqlx::query("SELECT * FROM music_claims WHERE id = ? AND state = 'pending'")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let pending = claim(&row)?;
        let state = if grant {
            ClaimState::Granted
        } else {
            ClaimState::Rejected
        };
        let row = sqlx::query(
            "UPDATE music_claims SET state = ?, resolved_at = ? WHERE id = ? RETURNING *",
        )
        .bind(state.as_str())
        .bind(now_ms())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if grant {
            sqlx::query("UPDATE musics SET owner_id = ?, updated_at = ? WHERE id = ?")
                .bind(pending.claimant_id)
                .bind(now_ms())
                .bind(pending.music_id)
                .execute(&mut *tx)
                .await?;
        }
        let resolved = claim(&row)?;
        tx.commit().await?;
        Ok(Some(resolved))
    }

    async fn add_user(&self, new: &NewUser) -> Result<User> {
        let password_hash = crate::model::SecretHash::hash(&new.password).await?;
        let created = inserted(
            sqlx::query(
                "INSERT INTO users (email, display_name, role, password_hash, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&new.email)
            .bind(&new.display_name)
            .bind(new.role.as_str())
            .bind(password_hash.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await,
        )?;
        let found = self
            .user_by_email(&new.email)
            .await?
            .ok_or_else(|| StorageError::not_found("user", &new.email))?;
        relational::same_user(found, new, created).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user).transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user).transpose()
    }

    async fn users(&self, after: UserId, limit: u32) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user).collect()
    }

    async fn set_user_disabled(&self, id: UserId, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
            .bind(disabled)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_token(&self, new: &NewToken) -> Result<ApiToken> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (public_id, user_id, name, scope, digest, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&new.public_id)
        .bind(new.user_id)
        .bind(&new.name)
        .bind(new.scope.as_str())
        .bind(new.digest.to_hex())
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        token(&row)
    }

    async fn token(&self, public_id: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE public_id = ?")
            .bind(public_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token).transpose()
    }

    async fn tokens(&self, user: Option<UserId>) -> Result<Vec<ApiToken>> {
        let rows =
            sqlx::query("SELECT * FROM api_tokens WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id")
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(token).collect()
    }

    async fn revoke_token(&self, id: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_token(&self, id: i64, at: OffsetDateTime) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
            .bind(unix_ms(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn installation_key(&self, name: &str, fresh: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO installation_keys (name, key_hex, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT key_hex FROM installation_keys WHERE name = ?")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn record_play(&self, new: &NewPlay) -> Result<Inserted<Play>> {
        let mut conn = self.pool.acquire().await?;
        insert_play(&mut conn, new).await
    }

    async fn record_play_fenced(&self, new: &NewPlay, fence: &Fence) -> Result<Inserted<Play>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        fenced(&mut tx, fence).await?;
        let recorded = insert_play(&mut tx, new).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn extend_play_fenced(
        &self,
        id: PlayId,
        started_at: OffsetDateTime,
        ended_at: OffsetDateTime,
        fence: &Fence,
    ) -> Result<Play> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        fenced(&mut tx, fence).await?;
        let row = sqlx::query(
            "UPDATE results SET started_at = MIN(started_at, ?), ended_at = MAX(ended_at, ?) \
             WHERE id = ? RETURNING *",
        )
        .bind(unix_ms(started_at))
        .bind(unix_ms(ended_at))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StorageError::not_found("play", id))?;
        tx.commit().await?;
        play(&row)
    }

    async fn check_fence(&self, fence: &Fence) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        fenced(&mut tx, fence).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn plays_of_music(
        &self,
        music: MusicId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Play>> {
        let rows = sqlx::query(PLAYS_OF_MUSIC_SQL)
            .bind(music)
            .bind(unix_ms(from))
            .bind(unix_ms(to))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(play).collect()
    }

    async fn plays_of_source(
        &self,
        source: Source,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Play>> {
        let sql = plays_of_source_sql(source);
        let rows = sqlx::query(sql)
            .bind(source.id())
            .bind(unix_ms(from))
            .bind(unix_ms(to))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(play).collect()
    }
    async fn play_rows(&self, filter: &PlayFilter, page: PlayPage) -> Result<Vec<PlayRow>> {
        let q = PlaySql::page(Dialect::Sqlite, filter, page);
        let rows = bound(&q).fetch_all(&self.pool).await?;
        rows.iter().map(play_row).collect()
    }

    async fn count_plays(&self, filter: &PlayFilter) -> Result<u64> {
        let q = PlaySql::count(filter);
        let row = bound(&q).fetch_one(&self.pool).await?;
        Ok(u64::try_from(row.int("n")?).unwrap_or_default())
    }

    async fn play_totals(
        &self,
        filter: &PlayFilter,
        by: Grouping,
        utc_offset_s: i32,
        limit: u32,
    ) -> Result<Vec<PlayTotal>> {
        let q = PlaySql::totals(Dialect::Sqlite, filter, by, utc_offset_s, limit);
        let rows = bound(&q).fetch_all(&self.pool).await?;
        rows.iter().map(|r| play_total(r, by)).collect()
    }

    async fn add_dispute(
        &self,
        play: PlayId,
        user: UserId,
        reason: &str,
    ) -> Result<Inserted<Dispute>> {
        let done = sqlx::query(
            "INSERT INTO play_disputes (play_id, user_id, reason, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(play)
        .bind(user)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        if done.as_ref().is_err_and(is_foreign_key_violation) {
            return Err(StorageError::not_found("play", play));
        }
        let created = inserted(done)?;
        let row = sqlx::query("SELECT * FROM play_disputes WHERE play_id = ? AND user_id = ?")
            .bind(play)
            .bind(user)
            .fetch_one(&self.pool)
            .await?;
        Ok(Inserted {
            record: dispute(&row)?,
            created,
        })
    }

    async fn disputes(&self, state: DisputeState, after: i64, limit: u32) -> Result<Vec<Dispute>> {
        let rows = sqlx::query(
            "SELECT * FROM play_disputes WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(state.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dispute).collect()
    }

    async fn disputes_of(&self, play: PlayId) -> Result<Vec<Dispute>> {
        let rows = sqlx::query("SELECT * FROM play_disputes WHERE play_id = ? ORDER BY id")
            .bind(play)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dispute).collect()
    }

    async fn resolve_dispute(&self, id: i64, upheld: bool) -> Result<Option<Dispute>> {
        let state = if upheld {
            DisputeState::Upheld
        } else {
            DisputeState::Rejected
        };
        let done = sqlx::query(
            "UPDATE play_disputes SET state = ?, resolved_at = ? WHERE id = ? AND state = 'open'",
        )
        .bind(state.as_str())
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT * FROM play_disputes WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(dispute(&row)?))
    }

    async fn add_session(&self, session: &WebSession) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE expires_at < ?")
            .bind(unix_ms(OffsetDateTime::now_utc()))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (digest, user_id, csrf, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&session.digest)
        .bind(session.user_id)
        .bind(&session.csrf)
        .bind(unix_ms(session.created_at))
        .bind(unix_ms(session.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, digest: &str) -> Result<Option<WebSession>> {
        let row = sqlx::query("SELECT * FROM web_sessions WHERE digest = ? AND expires_at > ?")
            .bind(digest)
            .bind(unix_ms(OffsetDateTime::now_utc()))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(web_session).transpose()
    }

    async fn extend_session(&self, digest: &str, expires_at: OffsetDateTime) -> Result<()> {
        sqlx::query("UPDATE web_sessions SET expires_at = ? WHERE digest = ?")
            .bind(unix_ms(expires_at))
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, digest: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE digest = ?")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_sessions_of(&self, user: UserId) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE user_id = ?")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_user_password(&self, id: UserId, hash: &SecretHash) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
