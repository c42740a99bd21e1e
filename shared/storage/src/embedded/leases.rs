//! [`Leases`] in the store file: one row per held name, with its expiry.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::SqliteStore;
use crate::error::Result;
use crate::leases::Leases;
use crate::model::unix_ms;

#[async_trait]
impl Leases for SqliteStore {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = unix_ms(OffsetDateTime::now_utc());
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
        sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
