//! [`Leases`] in the store file: one row per held name, with its expiry.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::SqliteStore;
use crate::error::Result;
use crate::leases::{Fence, Leases};
use crate::model::unix_ms;

/// Every this many acquisitions, expired leases that never handed out a
/// fencing token are deleted (one-off names, such as the TCP protocol's
/// used tickets, would otherwise stay forever). Fenced rows stay: their
/// token must keep growing.
const SWEEP_EVERY: u32 = 256;
static ACQUIRED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[async_trait]
impl Leases for SqliteStore {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = unix_ms(OffsetDateTime::now_utc());
        if ACQUIRED
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            sqlx::query("DELETE FROM leases WHERE expires_ms <= ? AND fence = 0")
                .bind(now)
                .execute(self.pool())
                .await?;
        }
        let expires = now + ttl.as_millis() as i64;
        // The update applies only if the row is ours or has expired.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?",
        )
        .bind(name)
        .bind(holder)
        .bind(expires)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<()> {
        // The row stays, expired, so that the next token is larger than its.
        sqlx::query("UPDATE leases SET expires_ms = 0 WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn acquire_fenced(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>> {
        let now = unix_ms(OffsetDateTime::now_utc());
        let expires = now + ttl.as_millis() as i64;
        // A renewal (same holder, not expired) keeps its token; a taking
        // (free, expired, or a new row) gets the next one.
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_ms, fence) VALUES (?, ?, ?, 1) \
             ON CONFLICT (name) DO UPDATE SET \
               fence = CASE WHEN leases.holder = excluded.holder AND leases.expires_ms > ? \
                            THEN leases.fence ELSE leases.fence + 1 END, \
               holder = excluded.holder, expires_ms = excluded.expires_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_ms <= ? \
             RETURNING fence",
        )
        .bind(name)
        .bind(holder)
        .bind(expires)
        .bind(now)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(token.map(|t| Fence {
            name: name.to_owned(),
            token: t as u64,
        }))
    }

    async fn held(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let now = unix_ms(OffsetDateTime::now_utc());
        // A range on the primary key rather than LIKE, whose wildcards the
        // prefix could contain.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, holder FROM leases WHERE name >= ? AND substr(name, 1, ?) = ? \
             AND expires_ms > ? ORDER BY name",
        )
        .bind(prefix)
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
