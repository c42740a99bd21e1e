//! The repository traits the services use. Each has a server implementation
//! (MySQL, MongoDB) and an embedded one (SQLite); the contract tests hold both
//! to the same assertions.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use time::OffsetDateTime;
use tokio::io::AsyncRead;

use crate::credentials::CredentialDigest;
use crate::error::Result;
use crate::leases::Fence;
use crate::model::{
    ApiToken, Claim, ClaimState, ContentHash, Device, DeviceId, FingerprintBlock, Imei,
    LoginVerifier, Music, MusicId, MusicState, NewDevice, NewMusic, NewPlay, NewRadio, NewSample,
    NewToken, NewUser, Play, PlayId, Radio, RadioGap, RadioId, RadioStatus, RawResult, SampleSpan,
    SecretHash, Source, User, UserId,
};
use crate::queries::{
    Dispute, DisputeState, Grouping, PlayFilter, PlayPage, PlayRow, PlayTotal, WebSession,
};
use crate::shards::ShardAnswer;

/// Audio bytes for the binary store.
pub type Reader<'a> = Box<dyn AsyncRead + Send + Unpin + 'a>;

/// What inserting an idempotent record did.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted<T> {
    pub record: T,
    /// False when the record already existed (a retried write).
    pub created: bool,
}

/// The relational side (paper, Figure 3: musics, radios, devices, users, results).
#[async_trait]
pub trait RelationalStore: Send + Sync + std::fmt::Debug {
    /// Answers when the database does (readiness checks).
    async fn ping(&self) -> Result<()>;
    /// Adds a music in state [`MusicState::Ingesting`], or returns the music
    /// that already has this content hash (a deleted one comes back to
    /// `Ingesting` with the new metadata, so that re-uploading restores it).
    async fn upsert_music(&self, music: &NewMusic) -> Result<Inserted<Music>>;
    /// Moves a music from state `from` to `to`; false if it was not in `from`.
    async fn set_music_state(&self, id: MusicId, from: MusicState, to: MusicState) -> Result<bool>;
    async fn music(&self, id: MusicId) -> Result<Option<Music>>;
    async fn music_by_hash(&self, hash: &ContentHash) -> Result<Option<Music>>;
    /// Musics in `state`, by id, after `after` (paging), at most `limit`.
    async fn musics(&self, state: MusicState, after: MusicId, limit: u32) -> Result<Vec<Music>>;

    /// Adds a radio; the same name with the same data again returns it.
    async fn add_radio(&self, radio: &NewRadio) -> Result<Inserted<Radio>>;
    /// Every radio, by name.
    async fn radios(&self) -> Result<Vec<Radio>>;
    async fn radio(&self, id: RadioId) -> Result<Option<Radio>>;
    /// Replaces a radio's fields; `None` if there is no such radio,
    /// [`crate::StorageError::Conflict`] if another radio has the name.
    async fn update_radio(&self, id: RadioId, radio: &NewRadio) -> Result<Option<Radio>>;
    /// Deletes a radio with its status and gaps; false if there is none.
    /// [`crate::StorageError::Conflict`] if plays were recorded from it.
    async fn delete_radio(&self, id: RadioId) -> Result<bool>;
    /// Stores what the replica listening to a station reports.
    async fn put_radio_status(&self, status: &RadioStatus) -> Result<()>;
    /// Every reported station status, by radio id.
    async fn radio_statuses(&self) -> Result<Vec<RadioStatus>>;
    /// Records a gap in a station's samples; the same start again is a retry.
    async fn add_radio_gap(&self, gap: &RadioGap) -> Result<()>;
    /// A station's gaps that started in `[from, to)`, by start.
    async fn radio_gaps(
        &self,
        radio: RadioId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<RadioGap>>;

    /// A music owner's musics in `state`, by id, after `after`, at most `limit`.
    async fn musics_owned(
        &self,
        owner: UserId,
        state: MusicState,
        after: MusicId,
        limit: u32,
    ) -> Result<Vec<Music>>;

    /// Records that `claimant` uploaded audio that is `music`, owned by
    /// someone else; the same claim again returns it (`created: false`).
    async fn add_claim(&self, music: MusicId, claimant: UserId) -> Result<Inserted<Claim>>;
    /// Claims in `state`, by id, after `after`, at most `limit`.
    async fn claims(&self, state: ClaimState, after: i64, limit: u32) -> Result<Vec<Claim>>;
    /// Settles a pending claim: granted, the music becomes the claimant's.
    /// `None` when there is no pending claim with this id.
    async fn resolve_claim(&self, id: i64, grant: bool) -> Result<Option<Claim>>;

    /// Registers a device; the same IMEI again is a conflict.
    async fn add_device(&self, device: &NewDevice) -> Result<Device>;
    async fn device_by_imei(&self, imei: &Imei) -> Result<Option<Device>>;
    /// Devices by id, after `after`, at most `limit`.
    async fn devices(&self, after: DeviceId, limit: u32) -> Result<Vec<Device>>;
    async fn set_device_enabled(&self, imei: &Imei, enabled: bool) -> Result<bool>;
    /// Gives the device to an operator (or to none); false for no such device.
    async fn set_device_owner(&self, imei: &Imei, owner: Option<UserId>) -> Result<bool>;
    /// The devices of operator `owner`, by id, after `after`, at most `limit`.
    async fn devices_owned(
        &self,
        owner: UserId,
        after: DeviceId,
        limit: u32,
    ) -> Result<Vec<Device>>;
    /// Replaces a device's secret (its digest, and its login verifier for
    /// the TCP protocol); false if there is no such device.
    async fn set_device_secret(
        &self,
        imei: &Imei,
        digest: &CredentialDigest,
        verifier: &LoginVerifier,
    ) -> Result<bool>;

    /// Adds a user (argon2id-hashes the password); the same e-mail again is a conflict.
    async fn add_user(&self, user: &NewUser) -> Result<User>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// Users by id, after `after`, at most `limit`.
    async fn users(&self, after: UserId, limit: u32) -> Result<Vec<User>>;
    /// False if there is no such user.
    async fn set_user_disabled(&self, id: UserId, disabled: bool) -> Result<bool>;

    /// Stores a new token.
    async fn add_token(&self, token: &NewToken) -> Result<ApiToken>;
    /// The token with this public id, revoked or not, with its digest.
    async fn token(&self, public_id: &str) -> Result<Option<ApiToken>>;
    /// Tokens by id (of one user, or of everyone), revoked ones included.
    async fn tokens(&self, user: Option<UserId>) -> Result<Vec<ApiToken>>;
    /// Revokes a token; false if there is no such token or it was revoked.
    async fn revoke_token(&self, id: i64) -> Result<bool>;
    /// Records that a token was used at `at`.
    async fn touch_token(&self, id: i64, at: OffsetDateTime) -> Result<()>;

    /// The installation's key named `name`: `fresh` if none was stored yet
    /// (it is stored then), otherwise the one stored first. Replicas starting
    /// together agree on one.
    async fn installation_key(&self, name: &str, fresh: &str) -> Result<String>;

    /// Records a play; a write with a key already recorded returns that play.
    async fn record_play(&self, play: &NewPlay) -> Result<Inserted<Play>>;
    /// [`RelationalStore::record_play`] under a lease, in one transaction
    /// with the fence check: [`crate::StorageError::Fenced`] (and nothing
    /// written) when a larger token of the lease has written.
    async fn record_play_fenced(&self, play: &NewPlay, fence: &Fence) -> Result<Inserted<Play>>;
    /// Widens a recorded play to cover `[started_at, ended_at]` too (late
    /// samples of it), under a lease like [`RelationalStore::record_play_fenced`].
    async fn extend_play_fenced(
        &self,
        id: PlayId,
        started_at: OffsetDateTime,
        ended_at: OffsetDateTime,
        fence: &Fence,
    ) -> Result<Play>;
    /// Records that `fence` writes (for writes in another store, such as
    /// deleting decided raw results): [`crate::StorageError::Fenced`] when a
    /// larger token of the lease has written.
    async fn check_fence(&self, fence: &Fence) -> Result<()>;
    /// Plays of a music that started in `[from, to)`, by start time.
    async fn plays_of_music(
        &self,
        music: MusicId,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Play>>;
    /// Plays heard from a source that started in `[from, to)`, by start time.
    async fn plays_of_source(
        &self,
        source: Source,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Play>>;

    /// One page of the plays `filter` selects, with their tracks and sources
    /// by name (see [`crate::queries`]).
    async fn play_rows(&self, filter: &PlayFilter, page: PlayPage) -> Result<Vec<PlayRow>>;
    /// How many plays `filter` selects.
    async fn count_plays(&self, filter: &PlayFilter) -> Result<u64>;
    /// Totals of the plays `filter` selects, grouped (days in the time zone
    /// `utc_offset_s` seconds east of UTC), at most `limit` groups.
    async fn play_totals(
        &self,
        filter: &PlayFilter,
        by: Grouping,
        utc_offset_s: i32,
        limit: u32,
    ) -> Result<Vec<PlayTotal>>;

    /// Records a musician's dispute of a play; the same user disputing the
    /// same play again returns the first (`created: false`).
    async fn add_dispute(
        &self,
        play: PlayId,
        user: UserId,
        reason: &str,
    ) -> Result<Inserted<Dispute>>;
    /// Disputes in `state`, by id, after `after`, at most `limit`.
    async fn disputes(&self, state: DisputeState, after: i64, limit: u32) -> Result<Vec<Dispute>>;
    /// Disputes of one play, by id.
    async fn disputes_of(&self, play: PlayId) -> Result<Vec<Dispute>>;
    /// Settles an open dispute; `None` when there is no open one with this id.
    async fn resolve_dispute(&self, id: i64, upheld: bool) -> Result<Option<Dispute>>;

    /// Stores a new browser session, and forgets expired ones.
    async fn add_session(&self, session: &WebSession) -> Result<()>;
    /// The session with this digest, if it has not expired.
    async fn session(&self, digest: &str) -> Result<Option<WebSession>>;
    /// Moves a session's expiry.
    async fn extend_session(&self, digest: &str, expires_at: OffsetDateTime) -> Result<()>;
    async fn delete_session(&self, digest: &str) -> Result<()>;
    /// Signs a user out everywhere (a new password, a disabled account).
    async fn delete_sessions_of(&self, user: UserId) -> Result<()>;
    /// Replaces a user's password hash; false if there is no such user.
    async fn set_user_password(&self, id: UserId, hash: &SecretHash) -> Result<bool>;
}

/// The document side (paper, Figure 3: music fingerprints, sample
/// fingerprints, raw results, music binaries).
#[async_trait]
pub trait DocumentStore: Send + Sync + std::fmt::Debug {
    /// Answers when the database does (readiness checks).
    async fn ping(&self) -> Result<()>;
    /// Writes one music's blocks (in block order), replacing any stored for it;
    /// writing the same blocks again, even concurrently, is harmless.
    async fn put_blocks(&self, blocks: &[FingerprintBlock]) -> Result<()>;
    /// A music's blocks, in block order.
    async fn blocks(&self, music: MusicId) -> Result<Vec<FingerprintBlock>>;
    /// Every stored block of every music (for loading the matcher), in
    /// music id order and in block order within a music.
    fn all_blocks(&self) -> BoxStream<'_, Result<FingerprintBlock>>;
    async fn delete_blocks(&self, music: MusicId) -> Result<()>;

    /// Stores a sample's fingerprint; the same id again keeps the first.
    async fn put_sample(&self, sample: &NewSample) -> Result<bool>;
    async fn sample(&self, id: &str) -> Result<Option<NewSample>>;
    /// A source's samples captured in `[from, to)`, in capture order, at
    /// most `limit`, without their peaks.
    async fn sample_spans(
        &self,
        source: Source,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<SampleSpan>>;
    /// A source's latest sample, without its peaks (where a radio's next
    /// sample may start).
    async fn last_sample(&self, source: Source) -> Result<Option<SampleSpan>>;
    /// Records that a sample went to the dead letters: reconciliation leaves
    /// it to an administrator. Harmless for an unknown id.
    async fn set_sample_aside(&self, sample_id: &str) -> Result<()>;
    /// Samples not settled (their result not decided by the filter, see
    /// [`DocumentStore::delete_raw_results`], nor set aside), captured before
    /// `older_than`, oldest first, at most `limit`. For reconciliation: those
    /// of them without a raw result may have been lost by the queue.
    async fn unsettled_samples(
        &self,
        older_than: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(String, Source)>>;

    /// Stores a raw result; a result for the same sample again replaces it.
    async fn put_raw_result(&self, result: &RawResult) -> Result<()>;
    /// A source's raw results captured at or after `from`, in capture order.
    async fn raw_results(
        &self,
        source: Source,
        from: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<RawResult>>;
    /// The sources that have raw results waiting, each with the instant its
    /// latest raw result was stored (for the filter's sweep of quiet sources).
    async fn raw_result_sources(&self) -> Result<Vec<(Source, OffsetDateTime)>>;
    /// Which of these samples have a raw result stored (recognised, waiting
    /// for the filter).
    async fn samples_with_raw_results(
        &self,
        sample_ids: &[String],
    ) -> Result<std::collections::HashSet<String>>;
    /// Removes raw results the filter has decided, and marks their samples
    /// settled first (reconciliation leaves them alone from then on): a
    /// sample is never without both its raw result and its mark. Marking
    /// here rather than when the result is stored keeps recognition at one
    /// write per sample; the filter marks a whole decision at once.
    async fn delete_raw_results(&self, sample_ids: &[String]) -> Result<()>;

    /// Stores a recognition shard's answer for a sample, unless that shard
    /// answered for it already (the first answer stands, so that a decision
    /// made without a late shard is never changed by it), and returns every
    /// answer stored for the sample under the same number of shards.
    async fn put_shard_answer(&self, answer: &ShardAnswer) -> Result<Vec<ShardAnswer>>;
    /// The answers stored for these samples under `shards` shards.
    async fn shard_answers(&self, sample_ids: &[String], shards: u32) -> Result<Vec<ShardAnswer>>;
    /// Deletes the answers given before `before` (long decided); returns how
    /// many.
    async fn prune_shard_answers(&self, before: OffsetDateTime) -> Result<u64>;

    /// Streams a music's audio into the binary store, replacing any earlier
    /// copy; returns the number of bytes stored.
    async fn put_binary(&self, music: MusicId, name: &str, audio: Reader<'_>) -> Result<u64>;
    /// Streams a music's audio out, if stored.
    async fn binary(&self, music: MusicId) -> Result<Option<Reader<'static>>>;
    async fn delete_binary(&self, music: MusicId) -> Result<()>;
}
