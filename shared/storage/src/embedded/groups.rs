//! Consumer groups beside a queue's own, in the SQLite file: the recognition
//! shards ([`Queue::SamplesShard`]), each of which reads every entry of the
//! samples queue, as a Redis Stream's groups do.
//!
//! A group is a row of `queue_groups` with the last entry handed to it; it is
//! made by its first read. An entry a group holds unacknowledged is a row of
//! `queue_group_pending` (consumer, time, deliveries), taken over by the next
//! reader of the group after the claim timeout. An entry leaves
//! `queue_entries` once every group of its queue has read it and holds it no
//! more, and every sibling shard's group exists ([`Queue::needed_groups`]):
//! a shard started later still finds what the others finished.

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use super::queue::{now_ms, row_id};
use crate::error::Result;
use crate::queue::{Backlog, DeadReason, Delivery, Queue, too_many_deliveries};

impl SqliteStore {
    /// Makes `queue`'s group if it is new.
    async fn join_group(&self, queue: Queue) -> Result<()> {
        sqlx::query("INSERT OR IGNORE INTO queue_groups (queue, grp, last_id) VALUES (?, ?, 0)")
            .bind(queue.name())
            .bind(queue.group())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// [`crate::WorkQueue::read`]'s one attempt for a group: over-delivered
    /// entries to the dead letters, then stale ones taken over, then new ones.
    pub(super) async fn group_claim(
        &self,
        queue: Queue,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery>> {
        self.join_group(queue).await?;
        let group = queue.group();
        let now = now_ms();
        let cutoff = now - self.queue.claim_after.as_millis() as i64;
        let limit = max as i64;
        let max_deliveries = i64::from(self.queue.max_deliveries.max(1));
        self.group_bury_overdelivered(queue, cutoff, max_deliveries, limit)
            .await?;
        let stale: Vec<(i64, i64)> = sqlx::query(
            "UPDATE queue_group_pending SET consumer = ?, delivered_ms = ?, deliveries = deliveries + 1 \
             WHERE grp = ? AND entry_id IN (SELECT entry_id FROM queue_group_pending WHERE grp = ? \
             AND deliveries < ? AND delivered_ms <= ? ORDER BY entry_id LIMIT ?) \
             RETURNING entry_id, deliveries",
        )
        .bind(consumer)
        .bind(now)
        .bind(&group)
        .bind(&group)
        .bind(max_deliveries)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("entry_id")?, r.try_get("deliveries")?)))
        .collect::<Result<_>>()?;
        let mut out = self.with_payloads(&stale, true).await?;
        if out.len() < max {
            let mut tx = self.pool.begin().await?;
            let fresh: Vec<(i64, i64)> = sqlx::query(
                "INSERT INTO queue_group_pending (grp, entry_id, consumer, delivered_ms, deliveries) \
                 SELECT ?1, id, ?2, ?3, 1 FROM queue_entries WHERE queue = ?4 AND id > \
                 (SELECT last_id FROM queue_groups WHERE queue = ?4 AND grp = ?1) \
                 ORDER BY id LIMIT ?5 RETURNING entry_id, deliveries",
            )
            .bind(&group)
            .bind(consumer)
            .bind(now)
            .bind(queue.name())
            .bind(limit - out.len() as i64)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("entry_id")?, r.try_get("deliveries")?)))
            .collect::<Result<_>>()?;
            if let Some(last) = fresh.iter().map(|&(id, _)| id).max() {
                sqlx::query(
                    "UPDATE queue_groups SET last_id = MAX(last_id, ?) WHERE queue = ? AND grp = ?",
                )
                .bind(last)
                .bind(queue.name())
                .bind(&group)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            out.extend(self.with_payloads(&fresh, false).await?);
        }
        out.sort_by_key(|d| row_id(&d.id).unwrap_or_default());
        Ok(out)
    }

    /// Deliveries of entries `(id, deliveries)`, with their payloads.
    async fn with_payloads(
        &self,
        entries: &[(i64, i64)],
        redelivered: bool,
    ) -> Result<Vec<Delivery>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&entries.iter().map(|e| e.0).collect::<Vec<_>>())
            .map_err(crate::StorageError::corrupt)?;
        let rows = sqlx::query(
            "SELECT id, payload FROM queue_entries WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut payloads = std::collections::HashMap::new();
        for row in &rows {
            payloads.insert(
                row.try_get::<i64, _>("id")?,
                row.try_get::<Vec<u8>, _>("payload")?,
            );
        }
        Ok(entries
            .iter()
            .filter_map(|&(id, deliveries)| {
                Some(Delivery {
                    id: id.to_string(),
                    payload: payloads.remove(&id)?,
                    redelivered,
                    deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
                })
            })
            .collect())
    }

    /// Moves the group's entries that are due for another delivery but have
    /// had all theirs to the dead letters.
    async fn group_bury_overdelivered(
        &self,
        queue: Queue,
        cutoff: i64,
        max_deliveries: i64,
        limit: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let due = sqlx::query(
            "DELETE FROM queue_group_pending WHERE grp = ?1 AND entry_id IN (SELECT entry_id \
             FROM queue_group_pending WHERE grp = ?1 AND deliveries >= ?2 AND delivered_ms <= ?3 \
             ORDER BY entry_id LIMIT ?4) RETURNING entry_id, deliveries",
        )
        .bind(queue.group())
        .bind(max_deliveries)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        for row in &due {
            let id: i64 = row.try_get("entry_id")?;
            let deliveries: i64 = row.try_get("deliveries")?;
            let reason = too_many_deliveries(u32::try_from(deliveries).unwrap_or(u32::MAX));
            bury(&mut tx, queue, id, &reason, deliveries).await?;
        }
        tx.commit().await?;
        self.overdelivered(queue, due.len());
        Ok(())
    }

    pub(super) async fn group_ack(&self, queue: Queue, id: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM queue_group_pending WHERE grp = ? AND entry_id = ?")
            .bind(queue.group())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        release(&mut tx, queue, id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn group_hold(&self, queue: Queue, consumer: &str, id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE queue_group_pending SET delivered_ms = ? WHERE grp = ? AND entry_id = ? \
             AND consumer = ?",
        )
        .bind(now_ms())
        .bind(queue.group())
        .bind(id)
        .bind(consumer)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn group_backlog(&self, queue: Queue) -> Result<Backlog> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM queue_entries WHERE queue = ?1 AND id > \
             COALESCE((SELECT last_id FROM queue_groups WHERE queue = ?1 AND grp = ?2), 0)) AS waiting, \
             (SELECT COUNT(*) FROM queue_group_pending WHERE grp = ?2) AS pending, \
             (SELECT COUNT(*) FROM dead_letters WHERE queue = ?1) AS dead",
        )
        .bind(queue.name())
        .bind(queue.group())
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            waiting: row.try_get::<i64, _>("waiting")? as u64,
            pending: row.try_get::<i64, _>("pending")? as u64,
            dead: row.try_get::<i64, _>("dead")? as u64,
        })
    }

    /// Moves an entry the group holds to the dead letters (the other groups
    /// go on with it); one it does not hold is left alone.
    pub(super) async fn group_dead_letter(
        &self,
        queue: Queue,
        id: i64,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let Some(deliveries) = sqlx::query_scalar::<_, i64>(
            "DELETE FROM queue_group_pending WHERE grp = ? AND entry_id = ? RETURNING deliveries",
        )
        .bind(queue.group())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(());
        };
        bury(&mut tx, queue, id, reason, deliveries).await?;
        tx.commit().await?;
        self.dead.add(queue, DeadReason::Refused, 1);
        Ok(())
    }
}

/// Copies entry `id` to the dead letters (the group no longer holds it) and
/// releases it.
async fn bury(
    tx: &mut SqliteConnection,
    queue: Queue,
    id: i64,
    reason: &str,
    deliveries: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead_letters (queue, entry_id, payload, reason, deliveries, dead_ms) \
         SELECT queue, id, payload, ?, ?, ? FROM queue_entries WHERE id = ?",
    )
    .bind(reason)
    .bind(deliveries)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    release(tx, queue, id).await
}

/// Deletes entry `id` once no group needs it: every group of the queue has
/// read it and holds it no more, and every group it waits for exists.
async fn release(tx: &mut SqliteConnection, queue: Queue, id: i64) -> Result<()> {
    let needed = queue.needed_groups();
    let names = serde_json::to_string(&needed).map_err(crate::StorageError::corrupt)?;
    sqlx::query(
        "DELETE FROM queue_entries WHERE id = ?1 \
         AND NOT EXISTS (SELECT 1 FROM queue_group_pending WHERE entry_id = ?1) \
         AND NOT EXISTS (SELECT 1 FROM queue_groups WHERE queue = ?2 AND last_id < ?1) \
         AND (SELECT COUNT(*) FROM queue_groups WHERE queue = ?2 \
              AND grp IN (SELECT value FROM json_each(?3))) = ?4",
    )
    .bind(id)
    .bind(queue.name())
    .bind(names)
    .bind(needed.len() as i64)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
