//! Leases: a name held by one holder at a time, for a bounded time.
//!
//! The filter takes a lease on a source before it reads that source's raw
//! results, so that each source is handled by exactly one replica at a time.
//! A lease expires unless its holder renews it (acquiring again renews), so
//! a replica that dies gives up its sources within one lease time.
//!
//! Leases use the wall clock of the server that keeps them (Redis) or of the
//! machine (the embedded store). A holder that stalls longer than its lease
//! (a long GC pause, a frozen VM) can find it taken over while it still
//! believes it holds it. So every acquisition also hands out a fencing token,
//! larger than any handed out before for that name ([`Leases::acquire_fenced`]),
//! and the writes made under a lease carry it: the relational store refuses
//! a write whose token is lower than one that already wrote
//! ([`crate::RelationalStore::record_play_fenced`]), so a holder that woke up
//! late cannot write over the new holder.

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
    /// As [`Leases::acquire`], with the lease's fencing token: a new one,
    /// larger than every earlier token of `name`, when the lease is taken;
    /// the same one when `holder` renews it. `None` when someone else holds it.
    async fn acquire_fenced(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>>;
    /// The leases held now whose names start with `prefix`, each with its
    /// holder, by name (which replicas are alive, who listens to what).
    async fn held(&self, prefix: &str) -> Result<Vec<(String, String)>>;
}

/// A lease's fencing token, carried by the writes made under the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub token: u64,
}
