//! The work queue in the SQLite file. An entry has `deliveries = 0` until a
//! consumer reads it; reading stamps it with the consumer and the time, and an
//! entry stamped longer ago than the claim timeout is handed to the next
//! reader. Each claim is one `UPDATE ... RETURNING`, atomic in SQLite, so two
//! readers (threads or processes) never get the same delivery.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::SqliteStore;
use crate::error::Result;
use crate::model::unix_ms;
use crate::queue::{Backlog, Delivery, Queue, WorkQueue};

/// How often a waiting reader looks for entries pushed by other processes
/// (pushes in this process wake it at once).
const POLL: Duration = Duration::from_millis(50);

fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

impl SqliteStore {
    async fn claim(&self, queue: Queue, consumer: &str, max: usize) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let cutoff = now - self.queue.claim_after.as_millis() as i64;
        let limit = max as i64;
        let stale = sqlx::query(
            "UPDATE queue_entries SET consumer = ?, delivered_ms = ?, deliveries = deliveries + 1 \
             WHERE id IN (SELECT id FROM queue_entries WHERE queue = ? AND deliveries > 0 \
             AND delivered_ms <= ? ORDER BY id LIMIT ?) RETURNING id, payload",
        )
        .bind(consumer)
        .bind(now)
        .bind(queue.name())
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
                 ORDER BY id LIMIT ?) RETURNING id, payload",
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
        out.sort_by_key(|d| d.id.parse::<i64>().unwrap_or_default());
        Ok(out)
    }
}

fn delivery(row: &sqlx::sqlite::SqliteRow, redelivered: bool) -> Result<Delivery> {
    Ok(Delivery {
        id: row.try_get::<i64, _>("id")?.to_string(),
        payload: row.try_get("payload")?,
        redelivered,
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
            let got = self.claim(queue, consumer, max.max(1)).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let _ = tokio::time::timeout(POLL.min(deadline - now), pushed).await;
        }
    }

    async fn ack(&self, queue: Queue, id: &str) -> Result<()> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(());
        };
        sqlx::query("DELETE FROM queue_entries WHERE queue = ? AND id = ?")
            .bind(queue.name())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn backlog(&self, queue: Queue) -> Result<Backlog> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(deliveries = 0), 0) AS waiting, COALESCE(SUM(deliveries > 0), 0) AS pending \
             FROM queue_entries WHERE queue = ?",
        )
        .bind(queue.name())
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            waiting: row.try_get::<i64, _>("waiting")? as u64,
            pending: row.try_get::<i64, _>("pending")? as u64,
        })
    }
}
