//! [`DocumentStore`] on the SQLite file.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio_util::io::StreamReader;

use super::SqliteStore;
use crate::error::{Result, StorageError};
use crate::model::{
    FingerprintBlock, MusicId, NewSample, RawResult, SampleSpan, Source, from_unix_ms, unix_ms,
};
use crate::repo::{DocumentStore, Reader, RelationalStore};
use crate::shards::ShardAnswer;

/// Binaries are stored in chunks of this size.
const CHUNK: usize = 256 * 1024;

fn block(row: &SqliteRow) -> Result<FingerprintBlock> {
    Ok(FingerprintBlock {
        music_id: row.try_get("music_id")?,
        block: row.try_get("block")?,
        start_frame: row.try_get("start_frame")?,
        end_frame: row.try_get("end_frame")?,
        track_frames: row.try_get("track_frames")?,
        peaks: row.try_get("peaks")?,
    })
}

fn span(row: &SqliteRow) -> Result<SampleSpan> {
    Ok(SampleSpan {
        id: row.try_get("id")?,
        captured_at: from_unix_ms(row.try_get("captured_ms")?),
        duration_ms: row.try_get("duration_ms")?,
        title: row.try_get("title")?,
    })
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        RelationalStore::ping(self).await
    }

    async fn put_blocks(&self, blocks: &[FingerprintBlock]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for b in blocks {
            sqlx::query(
                "INSERT OR REPLACE INTO music_fingerprints \
                 (music_id, block, start_frame, end_frame, track_frames, peaks) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(b.music_id)
            .bind(b.block)
            .bind(b.start_frame)
            .bind(b.end_frame)
            .bind(b.track_frames)
            .bind(&b.peaks)
            .execute(&mut *tx)
            .await?;
        }
        // Blocks beyond the new last one (from an earlier, longer fingerprint) go.
        if let Some(last) = blocks.last() {
            sqlx::query("DELETE FROM music_fingerprints WHERE music_id = ? AND block > ?")
                .bind(last.music_id)
                .bind(last.block)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn blocks(&self, music: MusicId) -> Result<Vec<FingerprintBlock>> {
        let rows =
            sqlx::query("SELECT * FROM music_fingerprints WHERE music_id = ? ORDER BY block")
                .bind(music)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(block).collect()
    }

    fn all_blocks(&self) -> BoxStream<'_, Result<FingerprintBlock>> {
        sqlx::query("SELECT * FROM music_fingerprints ORDER BY music_id, block")
            .fetch(&self.pool)
            .map(|row| block(&row?))
            .boxed()
    }

    async fn delete_blocks(&self, music: MusicId) -> Result<()> {
        sqlx::query("DELETE FROM music_fingerprints WHERE music_id = ?")
            .bind(music)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_sample(&self, s: &NewSample) -> Result<bool> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO sample_fingerprints \
             (id, source_kind, source_id, location, captured_ms, duration_ms, peaks, title) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(s.source.kind())
        .bind(s.source.id())
        .bind(&s.location)
        .bind(unix_ms(s.captured_at))
        .bind(s.duration_ms)
        .bind(&s.peaks)
        .bind(&s.title)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn sample(&self, id: &str) -> Result<Option<NewSample>> {
        let row = sqlx::query("SELECT * FROM sample_fingerprints WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(NewSample {
                id: row.try_get("id")?,
                source: Source::from_parts(row.try_get("source_kind")?, row.try_get("source_id")?)?,
                location: row.try_get("location")?,
                captured_at: from_unix_ms(row.try_get("captured_ms")?),
                duration_ms: row.try_get("duration_ms")?,
                peaks: row.try_get("peaks")?,
                title: row.try_get("title")?,
            })
        })
        .transpose()
    }

    async fn sample_spans(
        &self,
        source: Source,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<SampleSpan>> {
        let rows = sqlx::query(
            "SELECT id, captured_ms, duration_ms, title FROM sample_fingerprints \
             WHERE source_kind = ? AND source_id = ? AND captured_ms >= ? AND captured_ms < ? \
             ORDER BY captured_ms LIMIT ?",
        )
        .bind(source.kind())
        .bind(source.id())
        .bind(unix_ms(from))
        .bind(unix_ms(to))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(span).collect()
    }

    async fn last_sample(&self, source: Source) -> Result<Option<SampleSpan>> {
        let row = sqlx::query(
            "SELECT id, captured_ms, duration_ms, title FROM sample_fingerprints \
             WHERE source_kind = ? AND source_id = ? ORDER BY captured_ms DESC LIMIT 1",
        )
        .bind(source.kind())
        .bind(source.id())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(span).transpose()
    }

    async fn set_sample_aside(&self, sample_id: &str) -> Result<()> {
        sqlx::query("UPDATE sample_fingerprints SET set_aside_ms = ? WHERE id = ?")
            .bind(unix_ms(OffsetDateTime::now_utc()))
            .bind(sample_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unsettled_samples(
        &self,
        older_than: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(String, Source)>> {
        // Served by the partial index of unsettled samples (migration 0005).
        let rows = sqlx::query(
            "SELECT id, source_kind, source_id FROM sample_fingerprints \
             WHERE recognised_ms IS NULL AND set_aside_ms IS NULL AND captured_ms < ? \
             ORDER BY captured_ms LIMIT ?",
        )
        .bind(unix_ms(older_than))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: &str = row.try_get("source_kind")?;
                Ok((
                    row.try_get("id")?,
                    Source::from_parts(kind, row.try_get("source_id")?)?,
                ))
            })
            .collect()
    }

    async fn put_raw_result(&self, r: &RawResult) -> Result<()> {
        let body = serde_json::to_string(r).map_err(StorageError::corrupt)?;
        sqlx::query(
            "INSERT OR REPLACE INTO raw_results (sample_id, source_kind, source_id, captured_ms, body, stored_ms) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.sample_id)
        .bind(r.source.kind())
        .bind(r.source.id())
        .bind(unix_ms(r.captured_at))
        .bind(body)
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn raw_results(
        &self,
        source: Source,
        from: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<RawResult>> {
        let rows = sqlx::query(
            "SELECT body, stored_ms FROM raw_results WHERE source_kind = ? AND source_id = ? AND captured_ms >= ? \
             ORDER BY captured_ms, sample_id LIMIT ?",
        )
        .bind(source.kind())
        .bind(source.id())
        .bind(unix_ms(from))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let body: &str = row.try_get("body")?;
                let mut result: RawResult =
                    serde_json::from_str(body).map_err(StorageError::corrupt)?;
                result.stored_at = Some(from_unix_ms(row.try_get("stored_ms")?));
                Ok(result)
            })
            .collect()
    }

    async fn raw_result_sources(&self) -> Result<Vec<(Source, OffsetDateTime)>> {
        let rows = sqlx::query(
            "SELECT source_kind, source_id, MAX(stored_ms) AS latest FROM raw_results \
             GROUP BY source_kind, source_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: &str = row.try_get("source_kind")?;
                Ok((
                    Source::from_parts(kind, row.try_get("source_id")?)?,
                    from_unix_ms(row.try_get("latest")?),
                ))
            })
            .collect()
    }

    async fn samples_with_raw_results(
        &self,
        sample_ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        // The ids as one JSON array: one statement, whatever their number.
        let ids = serde_json::to_string(sample_ids).map_err(StorageError::corrupt)?;
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT sample_id FROM raw_results WHERE sample_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(found.into_iter().collect())
    }

    async fn put_shard_answer(&self, answer: &ShardAnswer) -> Result<Vec<ShardAnswer>> {
        let body = serde_json::to_string(answer).map_err(StorageError::corrupt)?;
        sqlx::query(
            "INSERT OR IGNORE INTO shard_answers (sample_id, shards, shard, body, answered_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&answer.sample_id)
        .bind(answer.shards)
        .bind(answer.shard)
        .bind(body)
        .bind(unix_ms(answer.answered_at))
        .execute(&self.pool)
        .await?;
        self.shard_answers(std::slice::from_ref(&answer.sample_id), answer.shards)
            .await
    }

    async fn shard_answers(&self, sample_ids: &[String], shards: u32) -> Result<Vec<ShardAnswer>> {
        let ids = serde_json::to_string(sample_ids).map_err(StorageError::corrupt)?;
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM shard_answers WHERE shards = ? \
             AND sample_id IN (SELECT value FROM json_each(?)) ORDER BY sample_id, shard",
        )
        .bind(shards)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(StorageError::corrupt))
            .collect()
    }

    async fn prune_shard_answers(&self, before: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM shard_answers WHERE answered_ms < ?")
            .bind(unix_ms(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_raw_results(&self, sample_ids: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = unix_ms(OffsetDateTime::now_utc());
        for id in sample_ids {
            sqlx::query("UPDATE sample_fingerprints SET recognised_ms = ? WHERE id = ?")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM raw_results WHERE sample_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_binary(&self, music: MusicId, name: &str, mut audio: Reader<'_>) -> Result<u64> {
        // One transaction: a crash or a read error leaves the earlier copy, not half a file.
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM music_binaries WHERE music_id = ?")
            .bind(music)
            .execute(&mut *tx)
            .await?;
        let mut total = 0u64;
        let mut buf = vec![0u8; CHUNK];
        for chunk in 0.. {
            let mut filled = 0;
            while filled < CHUNK {
                let n = audio.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 && chunk > 0 {
                break;
            }
            sqlx::query(
                "INSERT INTO music_binaries (music_id, chunk, name, data) VALUES (?, ?, ?, ?)",
            )
            .bind(music)
            .bind(chunk)
            .bind(name)
            .bind(&buf[..filled])
            .execute(&mut *tx)
            .await?;
            total += filled as u64;
            if filled < CHUNK {
                break;
            }
        }
        tx.commit().await?;
        Ok(total)
    }

    async fn binary(&self, music: MusicId) -> Result<Option<Reader<'static>>> {
        let chunks: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM music_binaries WHERE music_id = ?")
                .bind(music)
                .fetch_one(&self.pool)
                .await?;
        if chunks == 0 {
            return Ok(None);
        }
        // Chunks are fetched one at a time as the reader asks for them.
        let pool = self.pool.clone();
        let stream = futures_util::stream::iter(0..chunks).then(move |chunk| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT data FROM music_binaries WHERE music_id = ? AND chunk = ?",
                )
                .bind(music)
                .bind(chunk)
                .fetch_one(&pool)
                .await
                .map(Bytes::from)
                .map_err(std::io::Error::other)
            }
        });
        Ok(Some(Box::new(StreamReader::new(
            stream.into_stream().boxed(),
        ))))
    }

    async fn delete_binary(&self, music: MusicId) -> Result<()> {
        sqlx::query("DELETE FROM music_binaries WHERE music_id = ?")
            .bind(music)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
