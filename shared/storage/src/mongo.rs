//! [`DocumentStore`] on MongoDB (the official driver).
//!
//! Collections (paper, Figure 3), in the database named by the URL's path
//! (`hendu` when it names none):
//! - `music_fingerprints`: one document per 30 s block, `_id` `"<music>:<block>"`,
//!   the block's own peaks packed in one binary field (see
//!   [`FingerprintBlock`]). A 4-minute track is 15 documents of about 1 KB.
//! - `sample_fingerprints`: `_id` the sample id (source and capture instant),
//!   so a retried upload is one document; `recognised_at` / `set_aside_at`
//!   once its raw result is stored / it went to the dead letters (index
//!   `settled`, for reconciliation).
//! - `raw_results`: `_id` the sample id, so a redelivered sample is one result.
//! - `shard_answers`: `_id` `"<sample>:<N>:<k>"`, recognition shard `k` of
//!   `N`'s answer for a sample (the first insert wins); index `sample_id`.
//! - GridFS bucket `music_binaries`: the audio, streamed in 255 KiB chunks;
//!   the file name is the music id.
//!
//! Indexes are created at connect time (creating an existing index is a no-op,
//! so replicas may start together).

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::{AsyncWriteExt, StreamExt, TryStreamExt};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, DateTime, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::{ClientOptions, GridFsBucketOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::error::{Result, StorageError};
use crate::model::{
    FingerprintBlock, MusicId, NewSample, RawMatch, RawResult, SampleSpan, Source, from_unix_ms,
    unix_ms,
};
use crate::repo::{DocumentStore, Reader};
use crate::shards::{ShardAnswer, ShardReply};

const FINGERPRINTS: &str = "music_fingerprints";
pub(crate) const SAMPLES: &str = "sample_fingerprints";
pub(crate) const RAW_RESULTS: &str = "raw_results";
const BINARIES: &str = "music_binaries";
const SHARD_ANSWERS: &str = "shard_answers";
/// Set on a sample document when the filter decided its raw result (the
/// name is older than that rule; it once meant the raw result was stored).
const RECOGNISED_AT: &str = "recognised_at";
/// Set on a sample document when it went to the dead letters.
const SET_ASIDE_AT: &str = "set_aside_at";
/// The index of samples by whether they are settled (its absence at connect
/// time means the samples predate reconciliation).
const SETTLED_INDEX: &str = "settled";

#[derive(Debug, Clone)]
pub struct MongoStore {
    db: Database,
    fingerprints: Collection<BlockDoc>,
    samples: Collection<SampleDoc>,
    raw_results: Collection<RawDoc>,
    shard_answers: Collection<AnswerDoc>,
    binaries: GridFsBucket,
}

#[derive(Debug, Serialize, Deserialize)]
struct BlockDoc {
    #[serde(rename = "_id")]
    id: String,
    music_id: i64,
    block: i64,
    start_frame: i64,
    end_frame: i64,
    track_frames: i64,
    peaks: Binary,
}

#[derive(Debug, Serialize, Deserialize)]
struct SampleDoc {
    #[serde(rename = "_id")]
    id: String,
    source_kind: String,
    source_id: i64,
    location: Option<String>,
    captured_at: DateTime,
    duration_ms: i64,
    peaks: Binary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
}

/// The fields of a sample that place it in time ([`SampleSpan`]).
static SPAN_FIELDS: std::sync::LazyLock<mongodb::bson::Document> =
    std::sync::LazyLock::new(|| doc! { "_id": 1, "captured_at": 1, "duration_ms": 1, "title": 1 });

fn span(d: &mongodb::bson::Document) -> Result<SampleSpan> {
    Ok(SampleSpan {
        id: d.get_str("_id").map_err(StorageError::corrupt)?.to_owned(),
        captured_at: from_unix_ms(
            d.get_datetime("captured_at")
                .map_err(StorageError::corrupt)?
                .timestamp_millis(),
        ),
        duration_ms: number(
            "duration",
            d.get_i64("duration_ms").map_err(StorageError::corrupt)?,
        )?,
        title: d.get_str("title").ok().map(str::to_owned),
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct AnswerDoc {
    #[serde(rename = "_id")]
    id: String,
    sample_id: String,
    shards: i64,
    shard: i64,
    reply: ShardReply,
    answered_at: DateTime,
}

impl AnswerDoc {
    fn answer(self) -> Result<ShardAnswer> {
        Ok(ShardAnswer {
            sample_id: self.sample_id,
            shard: u32::try_from(self.shard).map_err(StorageError::corrupt)?,
            shards: u32::try_from(self.shards).map_err(StorageError::corrupt)?,
            reply: self.reply,
            answered_at: from_unix_ms(self.answered_at.timestamp_millis()),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RawDoc {
    #[serde(rename = "_id")]
    sample_id: String,
    source_kind: String,
    source_id: i64,
    captured_at: DateTime,
    /// When it was stored (by this client's clock).
    #[serde(default = "DateTime::now")]
    stored_at: DateTime,
    #[serde(default)]
    duration_ms: i64,
    #[serde(default)]
    location: Option<String>,
    matched: Option<RawMatch>,
}

fn binary(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

fn date(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis(unix_ms(t))
}

fn number<T: TryFrom<i64>>(what: &str, v: i64) -> Result<T> {
    T::try_from(v).map_err(|_| StorageError::corrupt(format!("{what} {v} out of range")))
}

impl TryFrom<BlockDoc> for FingerprintBlock {
    type Error = StorageError;
    fn try_from(d: BlockDoc) -> Result<Self> {
        Ok(Self {
            music_id: d.music_id,
            block: number("block", d.block)?,
            start_frame: number("start frame", d.start_frame)?,
            end_frame: number("end frame", d.end_frame)?,
            track_frames: number("track frames", d.track_frames)?,
            peaks: d.peaks.bytes,
        })
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

impl MongoStore {
    /// Connects (at most `pool` connections), checks the server answers, and
    /// creates the indexes.
    ///
    /// # Errors
    /// [`StorageError`] if the URL is bad or the server does not answer.
    pub async fn connect(url: &str, pool: u32) -> Result<Self> {
        let mut options = ClientOptions::parse(url).await?;
        options.max_pool_size = Some(pool);
        options.app_name.get_or_insert_with(|| "hendu".into());
        let db_name = options
            .default_database
            .clone()
            .unwrap_or_else(|| "hendu".into());
        let client = Client::with_options(options)?;
        let db = client.database(&db_name);
        db.run_command(doc! { "ping": 1 }).await?;
        let store = Self {
            fingerprints: db.collection(FINGERPRINTS),
            samples: db.collection(SAMPLES),
            raw_results: db.collection(RAW_RESULTS),
            shard_answers: db.collection(SHARD_ANSWERS),
            binaries: db.gridfs_bucket(
                GridFsBucketOptions::builder()
                    .bucket_name(BINARIES.to_owned())
                    .build(),
            ),
            db,
        };
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> Result<()> {
        self.fingerprints
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "music_id": 1, "block": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await?;
        self.samples
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "source_kind": 1, "source_id": 1, "captured_at": 1 })
                    .build(),
            )
            .await?;
        self.raw_results
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "source_kind": 1, "source_id": 1, "captured_at": 1 })
                    .build(),
            )
            .await?;
        self.shard_answers
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "sample_id": 1, "shards": 1 })
                    .build(),
            )
            .await?;
        self.shard_answers
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "answered_at": 1 })
                    .build(),
            )
            .await?;
        self.index_settled_samples().await?;
        Ok(())
    }

    /// The index reconciliation reads. The first time (no such index yet),
    /// the samples already stored are marked recognised first: they were
    /// stored before samples were marked, and are not queued again.
    async fn index_settled_samples(&self) -> Result<()> {
        let names = self.samples.list_index_names().await?;
        if !names.iter().any(|n| n == SETTLED_INDEX) {
            self.samples
                .update_many(
                    doc! { RECOGNISED_AT: { "$exists": false } },
                    doc! { "$set": { RECOGNISED_AT: DateTime::from_millis(0) } },
                )
                .await?;
        }
        self.samples
            .create_index(
                IndexModel::builder()
                    .keys(doc! { RECOGNISED_AT: 1, SET_ASIDE_AT: 1, "captured_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .name(SETTLED_INDEX.to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(())
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}

#[async_trait]
impl DocumentStore for MongoStore {
    async fn ping(&self) -> Result<()> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    async fn put_blocks(&self, blocks: &[FingerprintBlock]) -> Result<()> {
        // One upsert per block, all in flight at once: replaying the same
        // blocks (a retry, or two replicas ingesting the same audio) converges
        // on the same documents.
        let upserts = blocks.iter().map(|b| async move {
            let doc = BlockDoc {
                id: format!("{}:{}", b.music_id, b.block),
                music_id: b.music_id,
                block: i64::from(b.block),
                start_frame: i64::from(b.start_frame),
                end_frame: i64::from(b.end_frame),
                track_frames: i64::from(b.track_frames),
                peaks: binary(&b.peaks),
            };
            let filter = doc! { "_id": &doc.id };
            for attempt in 0..3 {
                match self
                    .fingerprints
                    .replace_one(filter.clone(), &doc)
                    .upsert(true)
                    .await
                {
                    // Two upserts of a new _id race: the loser retries as an update.
                    Err(e) if is_duplicate_key(&e) && attempt < 2 => continue,
                    other => {
                        other?;
                        break;
                    }
                }
            }
            Ok::<_, StorageError>(())
        });
        futures_util::future::try_join_all(upserts).await?;
        // Blocks beyond the new last one (from an earlier, longer fingerprint) go.
        let mut last: std::collections::BTreeMap<MusicId, u32> = Default::default();
        for b in blocks {
            let e = last.entry(b.music_id).or_default();
            *e = (*e).max(b.block);
        }
        for (music, last) in last {
            self.fingerprints
                .delete_many(doc! { "music_id": music, "block": { "$gt": i64::from(last) } })
                .await?;
        }
        Ok(())
    }

    async fn blocks(&self, music: MusicId) -> Result<Vec<FingerprintBlock>> {
        let docs: Vec<BlockDoc> = self
            .fingerprints
            .find(doc! { "music_id": music })
            .sort(doc! { "block": 1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(FingerprintBlock::try_from).collect()
    }

    fn all_blocks(&self) -> BoxStream<'_, Result<FingerprintBlock>> {
        let find = self
            .fingerprints
            .find(doc! {})
            .sort(doc! { "music_id": 1, "block": 1 });
        futures_util::stream::once(std::future::IntoFuture::into_future(find))
            .map(|cursor| match cursor {
                Ok(c) => c.map(|d| FingerprintBlock::try_from(d?)).boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e.into()) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn delete_blocks(&self, music: MusicId) -> Result<()> {
        self.fingerprints
            .delete_many(doc! { "music_id": music })
            .await?;
        Ok(())
    }

    async fn put_sample(&self, s: &NewSample) -> Result<bool> {
        let doc = SampleDoc {
            id: s.id.clone(),
            source_kind: s.source.kind().into(),
            source_id: s.source.id(),
            location: s.location.clone(),
            captured_at: date(s.captured_at),
            duration_ms: i64::from(s.duration_ms),
            peaks: binary(&s.peaks),
            title: s.title.clone(),
        };
        match self.samples.insert_one(doc).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn sample(&self, id: &str) -> Result<Option<NewSample>> {
        let Some(d) = self.samples.find_one(doc! { "_id": id }).await? else {
            return Ok(None);
        };
        Ok(Some(NewSample {
            id: d.id,
            source: Source::from_parts(&d.source_kind, d.source_id)?,
            location: d.location,
            captured_at: from_unix_ms(d.captured_at.timestamp_millis()),
            duration_ms: number("duration", d.duration_ms)?,
            peaks: d.peaks.bytes,
            title: d.title,
        }))
    }

    async fn sample_spans(
        &self,
        source: Source,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<SampleSpan>> {
        let docs: Vec<mongodb::bson::Document> = self
            .samples
            .clone_with_type::<mongodb::bson::Document>()
            .find(doc! {
                "source_kind": source.kind(),
                "source_id": source.id(),
                "captured_at": { "$gte": date(from), "$lt": date(to) },
            })
            .sort(doc! { "captured_at": 1 })
            .projection(SPAN_FIELDS.clone())
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        docs.iter().map(span).collect()
    }

    async fn last_sample(&self, source: Source) -> Result<Option<SampleSpan>> {
        let found = self
            .samples
            .clone_with_type::<mongodb::bson::Document>()
            .find_one(doc! { "source_kind": source.kind(), "source_id": source.id() })
            .sort(doc! { "captured_at": -1 })
            .projection(SPAN_FIELDS.clone())
            .await?;
        found.as_ref().map(span).transpose()
    }

    async fn set_sample_aside(&self, sample_id: &str) -> Result<()> {
        self.samples
            .update_one(
                doc! { "_id": sample_id },
                doc! { "$set": { SET_ASIDE_AT: DateTime::now() } },
            )
            .await?;
        Ok(())
    }

    async fn unsettled_samples(
        &self,
        older_than: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(String, Source)>> {
        // A missing field matches null; served by the index of settled samples.
        let docs: Vec<mongodb::bson::Document> = self
            .samples
            .clone_with_type::<mongodb::bson::Document>()
            .find(doc! {
                RECOGNISED_AT: null,
                SET_ASIDE_AT: null,
                "captured_at": { "$lt": date(older_than) },
            })
            .sort(doc! { "captured_at": 1 })
            .projection(doc! { "_id": 1, "source_kind": 1, "source_id": 1 })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| {
                let id = d.get_str("_id").map_err(StorageError::corrupt)?;
                let kind = d.get_str("source_kind").map_err(StorageError::corrupt)?;
                let source = d.get_i64("source_id").map_err(StorageError::corrupt)?;
                Ok((id.to_owned(), Source::from_parts(kind, source)?))
            })
            .collect()
    }

    async fn put_raw_result(&self, r: &RawResult) -> Result<()> {
        let doc = RawDoc {
            sample_id: r.sample_id.clone(),
            source_kind: r.source.kind().into(),
            source_id: r.source.id(),
            captured_at: date(r.captured_at),
            stored_at: DateTime::now(),
            duration_ms: i64::from(r.duration_ms),
            location: r.location.clone(),
            matched: r.matched.clone(),
        };
        self.raw_results
            .replace_one(doc! { "_id": &r.sample_id }, doc)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn raw_results(
        &self,
        source: Source,
        from: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<RawResult>> {
        let docs: Vec<RawDoc> = self
            .raw_results
            .find(doc! {
                "source_kind": source.kind(),
                "source_id": source.id(),
                "captured_at": { "$gte": date(from) },
            })
            .sort(doc! { "captured_at": 1, "_id": 1 })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|d| {
                Ok(RawResult {
                    source: Source::from_parts(&d.source_kind, d.source_id)?,
                    sample_id: d.sample_id,
                    captured_at: from_unix_ms(d.captured_at.timestamp_millis()),
                    duration_ms: number("duration", d.duration_ms)?,
                    location: d.location,
                    matched: d.matched,
                    stored_at: Some(from_unix_ms(d.stored_at.timestamp_millis())),
                })
            })
            .collect()
    }

    async fn raw_result_sources(&self) -> Result<Vec<(Source, OffsetDateTime)>> {
        let mut groups = self
            .raw_results
            .aggregate([doc! { "$group": {
                "_id": { "kind": "$source_kind", "id": "$source_id" },
                "latest": { "$max": "$stored_at" },
            } }])
            .await?;
        let mut out = Vec::new();
        while let Some(group) = groups.try_next().await? {
            let key = group
                .get_document("_id")
                .map_err(|e| StorageError::corrupt(format!("raw result group: {e}")))?;
            let kind = key.get_str("kind").map_err(StorageError::corrupt)?;
            let id = key.get_i64("id").map_err(StorageError::corrupt)?;
            let latest = group
                .get_datetime("latest")
                .map_err(StorageError::corrupt)?;
            out.push((
                Source::from_parts(kind, id)?,
                from_unix_ms(latest.timestamp_millis()),
            ));
        }
        Ok(out)
    }

    async fn samples_with_raw_results(
        &self,
        sample_ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let docs: Vec<mongodb::bson::Document> = self
            .raw_results
            .clone_with_type::<mongodb::bson::Document>()
            .find(doc! { "_id": { "$in": sample_ids } })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| Ok(d.get_str("_id").map_err(StorageError::corrupt)?.to_owned()))
            .collect()
    }

    async fn put_shard_answer(&self, answer: &ShardAnswer) -> Result<Vec<ShardAnswer>> {
        let doc = AnswerDoc {
            id: format!("{}:{}:{}", answer.sample_id, answer.shards, answer.shard),
            sample_id: answer.sample_id.clone(),
            shards: i64::from(answer.shards),
            shard: i64::from(answer.shard),
            reply: answer.reply.clone(),
            answered_at: date(answer.answered_at),
        };
        match self.shard_answers.insert_one(doc).await {
            Err(e) if is_duplicate_key(&e) => {}
            other => {
                other?;
            }
        }
        self.shard_answers(std::slice::from_ref(&answer.sample_id), answer.shards)
            .await
    }

    async fn shard_answers(&self, sample_ids: &[String], shards: u32) -> Result<Vec<ShardAnswer>> {
        let docs: Vec<AnswerDoc> = self
            .shard_answers
            .find(doc! { "sample_id": { "$in": sample_ids }, "shards": i64::from(shards) })
            .sort(doc! { "sample_id": 1, "shard": 1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(AnswerDoc::answer).collect()
    }

    async fn prune_shard_answers(&self, before: OffsetDateTime) -> Result<u64> {
        let done = self
            .shard_answers
            .delete_many(doc! { "answered_at": { "$lt": date(before) } })
            .await?;
        Ok(done.deleted_count)
    }

    async fn delete_raw_results(&self, sample_ids: &[String]) -> Result<()> {
        self.samples
            .update_many(
                doc! { "_id": { "$in": sample_ids } },
                doc! { "$set": { RECOGNISED_AT: DateTime::now() } },
            )
            .await?;
        self.raw_results
            .delete_many(doc! { "_id": { "$in": sample_ids } })
            .await?;
        Ok(())
    }

    async fn put_binary(&self, music: MusicId, name: &str, audio: Reader<'_>) -> Result<u64> {
        let filename = music.to_string();
        let earlier = self.binary_ids(&filename).await?;
        let mut upload = self
            .binaries
            .open_upload_stream(&filename)
            .metadata(doc! { "music_id": music, "name": name })
            .await?;
        let copied = futures_util::io::copy(audio.compat(), &mut upload).await;
        match copied {
            Ok(n) => {
                upload.close().await?;
                // The new copy is complete before the old ones go.
                for id in earlier {
                    self.binaries.delete(id).await?;
                }
                Ok(n)
            }
            Err(e) => {
                let _ = upload.abort().await;
                Err(e.into())
            }
        }
    }

    async fn binary(&self, music: MusicId) -> Result<Option<Reader<'static>>> {
        let Some(id) = self.binary_ids(&music.to_string()).await?.pop() else {
            return Ok(None);
        };
        let download = self.binaries.open_download_stream(id).await?;
        Ok(Some(Box::new(download.compat())))
    }

    async fn delete_binary(&self, music: MusicId) -> Result<()> {
        for id in self.binary_ids(&music.to_string()).await? {
            self.binaries.delete(id).await?;
        }
        Ok(())
    }
}

impl MongoStore {
    /// Ids of the stored copies of a binary, oldest first.
    async fn binary_ids(&self, filename: &str) -> Result<Vec<mongodb::bson::Bson>> {
        let files: Vec<_> = self
            .binaries
            .find(doc! { "filename": filename })
            .sort(doc! { "uploadDate": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(files.into_iter().map(|f| f.id).collect())
    }
}
