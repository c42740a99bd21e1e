//! The work queue in the SQLite file. An entry has `deliveries = 0` until a
//! consumer reads it; reading stamps it with the consumer and the time, and an
//! entry stamped longer ago than the claim timeout is handed to the next
//! reader. Each claim is one `UPDATE ... RETURNING`, atomic in SQLite, so two
//! readers (threads or processes) never get the same delivery.
//!
//! Those columns are the delivery of the queue's own group. Other groups
//! (the recognition shards, each reading every sample) keep theirs beside
//! it ([`super::groups`]).
//!
//! An entry stamped too long ago that was already delivered `max_deliveries`
//! times moves to `dead_letters` instead (one transaction whose first
//! statement deletes it, so two readers never both move it).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use super::SqliteStore;
use crate::error::Result;
use crate::model::{from_unix_ms, unix_ms};
use crate::queue::{
    Backlog, DeadCounts, DeadLetter, DeadReason, Delivery, Queue, WorkQueue, bad_cursor,
    too_many_deliveries,
};

/// How often a waiting reader looks for entries pushed by other processes
/// (pushes in this process wake it at once).
const POLL: Duration = Duration::from_millis(50);

pub(super) fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// Entry ids are row ids; anything else names no entry.
pub(super) fn row_id(id: &str) -> Option<i64> {
    id.parse().ok()
}

/// A paging cursor: after nothing, or after an entry id.
fn cursor(after: Option<&str>) -> Result<i64> {
    after.map_or(Ok(0), |a| row_id(a).ok_or_else(bad_cursor))
}

impl SqliteStore {
    async fn claim(&self, queue: Queue, consumer: &str, max: usize) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let cutoff = now - self.queue.claim_after.as_millis() as i64;
        let limit = max as i64;
        let max_deliveries = i64::from(self.queue.max_deliveries.max(1));
        self.bury_overdelivered(queue, cutoff, max_deliveries, limit)
            .await?;
        let stale = sqlx::query(
            "UPDATE queue_entries SET consumer = ?, delivered_ms = ?, deliveries = deliveries + 1 \
             WHERE id IN (SELECT id FROM queue_entries WHERE queue = ? AND deliveries > 0 \
             AND deliveries < ? AND delivered_ms <= ? ORDER BY id LIMIT ?) \
             RETURNING id, payload, deliveries",
        )
        .bind(consumer)
        .bind(now)
        .bind(queue.name())
        .bind(max_deliveries)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Delivery> = stale
            .iter()
            .map(|r| delivery(r, true))
            .collect::<Result<_>>()?;
        if out.len() < max {
            let fresh = sqlx::query(
                "UPDATE queue_entries SET consumer = ?, delivered_ms = ?, deliveries = 1 \
                 WHERE id IN (SELECT id FROM queue_entries WHERE queue = ? AND deliveries = 0 \
                 ORDER BY id LIMIT ?) RETURNING id, payload, deliveries",
            )
            .bind(consumer)
            .bind(now)
            .bind(queue.name())
            .bind(limit - out.len() as i64)
            .fetch_all(&self.pool)
            .await?;
            for row in &fresh {
                out.push(delivery(row, false)?);
            }
        }
        out.sort_by_key(|d| row_id(&d.id).unwrap_or_default());
        Ok(out)
    }

    /// Moves entries that are due for another delivery but have had all
    /// theirs to the dead letters.
    async fn bury_overdelivered(
        &self,
        queue: Queue,
        cutoff: i64,
        max_deliveries: i64,
        limit: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let due = sqlx::query(
            "DELETE FROM queue_entries WHERE id IN (SELECT id FROM queue_entries WHERE queue = ? \
             AND deliveries >= ? AND delivered_ms <= ? ORDER BY id LIMIT ?) \
             RETURNING id, payload, deliveries",
        )
        .bind(queue.name())
        .bind(max_deliveries)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for row in &due {
            let deliveries: i64 = row.try_get("deliveries")?;
            sqlx::query(
                "INSERT INTO dead_letters (queue, entry_id, payload, reason, deliveries, dead_ms) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(queue.name())
            .bind(row.try_get::<i64, _>("id")?)
            .bind(row.try_get::<Vec<u8>, _>("payload")?)
            .bind(too_many_deliveries(
                u32::try_from(deliveries).unwrap_or(u32::MAX),
            ))
            .bind(deliveries)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.overdelivered(queue, due.len());
        Ok(())
    }

    /// Logs and counts `n` entries of `queue`'s group moved to the dead
    /// letters for too many deliveries.
    pub(super) fn overdelivered(&self, queue: Queue, n: usize) {
        tracing::warn!(
            queue = queue.name(),
            group = %queue.group(),
            entries = n,
            "entries delivered too often without being acknowledged moved to the dead letters"
        );
        self.dead.add(queue, DeadReason::MaxDeliveries, n as u64);
    }
}

fn delivery(row: &SqliteRow, redelivered: bool) -> Result<Delivery> {
    Ok(Delivery {
        id: row.try_get::<i64, _>("id")?.to_string(),
        payload: row.try_get("payload")?,
        redelivered,
        deliveries: u32::try_from(row.try_get::<i64, _>("deliveries")?).unwrap_or(u32::MAX),
    })
}

fn dead_letter(queue: Queue, row: &SqliteRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.try_get::<i64, _>("id")?.to_string(),
        queue,
        payload: row.try_get("payload")?,
        reason: row.try_get("reason")?,
        deliveries: u32::try_from(row.try_get::<i64, _>("deliveries")?).unwrap_or(u32::MAX),
        dead_at: from_unix_ms(row.try_get("dead_ms")?),
    })
}

#[async_trait]
impl WorkQueue for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn push(&self, queue: Queue, payload: &[u8]) -> Result<String> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO queue_entries (queue, payload) VALUES (?, ?) RETURNING id",
        )
        .bind(queue.name())
        .bind(payload)
        .fetch_one(&self.pool)
        .await?;
        self.pushed.notify_waiters();
        Ok(id.to_string())
    }

    async fn read(
        &self,
        queue: Queue,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let pushed = self.pushed.notified();
            let got = if matches!(queue, Queue::SamplesShard(_)) {
                self.group_claim(queue, consumer, max.max(1)).await?
            } else {
                self.claim(queue, consumer, max.max(1)).await?
            };
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let _ = tokio::time::timeout(POLL.min(deadline - now), pushed).await;
        }
    }

    async fn ack(&self, queue: Queue, id: &str) -> Result<()> {
        let Some(id) = row_id(id) else {
            return Ok(());
        };
        if matches!(queue, Queue::SamplesShard(_)) {
            return self.group_ack(queue, id).await;
        }
        sqlx::query("DELETE FROM queue_entries WHERE queue = ? AND id = ?")
            .bind(queue.name())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn hold(&self, queue: Queue, consumer: &str, id: &str) -> Result<bool> {
        let Some(id) = row_id(id) else {
            return Ok(false);
        };
        if matches!(queue, Queue::SamplesShard(_)) {
            return self.group_hold(queue, consumer, id).await;
        }
        let done = sqlx::query(
            "UPDATE queue_entries SET delivered_ms = ? WHERE queue = ? AND id = ? AND consumer = ? \
             AND deliveries > 0",
        )
        .bind(now_ms())
        .bind(queue.name())
        .bind(id)
        .bind(consumer)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn backlog(&self, queue: Queue) -> Result<Backlog> {
        if matches!(queue, Queue::SamplesShard(_)) {
            return self.group_backlog(queue).await;
        }
        let row = sqlx::query(
            "SELECT COALESCE(SUM(deliveries = 0), 0) AS waiting, COALESCE(SUM(deliveries > 0), 0) AS pending, \
             (SELECT COUNT(*) FROM dead_letters WHERE queue = ?1) AS dead \
             FROM queue_entries WHERE queue = ?1",
        )
        .bind(queue.name())
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            waiting: row.try_get::<i64, _>("waiting")? as u64,
            pending: row.try_get::<i64, _>("pending")? as u64,
            dead: row.try_get::<i64, _>("dead")? as u64,
        })
    }

    async fn entries(
        &self,
        queue: Queue,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let after = cursor(after)?;
        let rows = sqlx::query(
            "SELECT id, payload FROM queue_entries WHERE queue = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(queue.name())
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("id")?.to_string(),
                    r.try_get("payload")?,
                ))
            })
            .collect()
    }

    async fn dead_letter(&self, queue: Queue, delivery: &Delivery, reason: &str) -> Result<()> {
        let Some(id) = row_id(&delivery.id) else {
            return Ok(());
        };
        if matches!(queue, Queue::SamplesShard(_)) {
            return self.group_dead_letter(queue, id, reason).await;
        }
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "DELETE FROM queue_entries WHERE queue = ? AND id = ? RETURNING id, payload, deliveries",
        )
        .bind(queue.name())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO dead_letters (queue, entry_id, payload, reason, deliveries, dead_ms) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(queue.name())
        .bind(id)
        .bind(row.try_get::<Vec<u8>, _>("payload")?)
        .bind(reason)
        .bind(row.try_get::<i64, _>("deliveries")?)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.dead.add(queue, DeadReason::Refused, 1);
        Ok(())
    }

    async fn dead_letters(
        &self,
        queue: Queue,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let after = cursor(after)?;
        let rows = sqlx::query(
            "SELECT id, payload, reason, deliveries, dead_ms FROM dead_letters \
             WHERE queue = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(queue.name())
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| dead_letter(queue, r)).collect()
    }

    async fn requeue_dead_letter(&self, queue: Queue, id: &str) -> Result<bool> {
        let Some(id) = row_id(id) else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        let Some(payload) = sqlx::query_scalar::<_, Vec<u8>>(
            "DELETE FROM dead_letters WHERE queue = ? AND id = ? RETURNING payload",
        )
        .bind(queue.name())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(false);
        };
        sqlx::query("INSERT INTO queue_entries (queue, payload) VALUES (?, ?)")
            .bind(queue.name())
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.pushed.notify_waiters();
        Ok(true)
    }

    async fn discard_dead_letter(&self, queue: Queue, id: &str) -> Result<bool> {
        let Some(id) = row_id(id) else {
            return Ok(false);
        };
        let done = sqlx::query("DELETE FROM dead_letters WHERE queue = ? AND id = ?")
            .bind(queue.name())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    fn dead_counts(&self) -> DeadCounts {
        self.dead.clone()
    }
}
