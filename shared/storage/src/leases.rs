//! Leases: a name held by one holder at a time, for a bounded time.
//!
//! The filter takes a lease on a source before it reads that source's raw
//! results, so that each source is handled by exactly one replica at a time.
//! A lease expires unless its holder renews it (acquiring again renews), so
//! a replica that dies gives up its sources within one lease time.
//!
//! Leases use the wall clock of the server that keeps them (Redis) or of the
//! machine (the embedded store). A holder that stalls longer than its lease
//! can find it taken over; the filter's writes are idempotent, so such an
//! overlap may repeat work but never duplicates a play.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

#[async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Takes `name` for `holder` for `ttl` if no one else holds it; if
    /// `holder` already holds it, extends it to `ttl` from now. True when
    /// `holder` holds it afterwards.
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;
    /// Gives `name` up if `holder` holds it (otherwise does nothing).
    async fn release(&self, name: &str, holder: &str) -> Result<()>;
}
