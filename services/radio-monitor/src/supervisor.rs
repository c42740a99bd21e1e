//! Which replica listens to which station.
//!
//! Every replica holds a presence lease (`radio-monitor/replica/{name}`)
//! while it runs, and a lease per station it listens to
//! (`radio-monitor/station/{id}`), renewed every scan. At each scan a
//! replica lists the enabled stations and the live replicas, and takes the
//! free stations that rendezvous hashing gives to it (the replica with the
//! highest hash of station and replica name): replicas starting together
//! split the stations evenly without talking to each other. A free station
//! whose chosen replica has not taken it within two scans (it is full, or
//! dying) goes to whichever replica gets its lease first. A listener
//! whose lease is not renewed in time stops by itself, a fifth of a lease
//! before the store lets anyone else take the station (however busy its
//! supervisor is); a replica that shuts down releases its leases, so others take its stations at their next scan rather than
//! after the lease time.
//!
//! A replica that joins later finds every station held. So every replica
//! hands over, a few per scan, the stations that hashing over the live
//! replicas now gives to another replica seen for two scans (and not full):
//! each listener stops after its next stored sample (no audio cut off
//! mid-sample) and releases its lease, and the chosen replica takes it at
//! its next scan. Stations converge on the hashing's assignment, so a
//! replica that joins gets about its share and only those stations move;
//! a station at its chosen replica is never moved. A station handed over
//! is not handed over again for [`HANDOVER_QUIET`], and the replica that
//! handed it takes it back only if nobody else has for four scans.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hendu_service::Heartbeat;
use hendu_storage::model::{Radio, RadioId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Context;
use crate::listener;

pub const REPLICA_LEASES: &str = "radio-monitor/replica/";
pub const STATION_LEASES: &str = "radio-monitor/station/";

/// Most stations one replica starts handing over per scan.
const HANDOVER_PER_SCAN: usize = 4;
/// A listener asked to hand over is stopped after this even without a sample.
const HANDOVER_LIMIT: std::time::Duration = std::time::Duration::from_secs(75);
/// A station handed over stays where it went this long.
const HANDOVER_QUIET: std::time::Duration = std::time::Duration::from_secs(600);

pub fn station_lease(id: RadioId) -> String {
    format!("{STATION_LEASES}{id}")
}

/// A station this replica listens to.
#[derive(Debug)]
struct Running {
    radio: Radio,
    /// The listener's lease deadline (see [`listener::Flags::lease`]).
    lease: watch::Sender<tokio::time::Instant>,
    /// Set to ask the listener to stop after its next sample.
    handover: Arc<AtomicBool>,
    /// When the handover was asked for.
    handover_since: Option<std::time::Instant>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How long after a renewal was sent the listener may count on its lease.
/// The store starts the lease when it gets the renewal, later than it was
/// sent, so a listener stops a fifth of a lease before anyone else can take
/// the station: room for a slow clock and for closing the connection.
fn lease_deadline(sent: tokio::time::Instant, ttl: std::time::Duration) -> tokio::time::Instant {
    sent + ttl.mul_f64(0.8)
}

/// FNV-1a: the same on every replica and every build (the standard
/// library's hasher may change between Rust versions).
/// Its output mixed (MurmurHash3's finaliser), since FNV alone spreads
/// inputs that differ in a byte poorly.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The replica rendezvous hashing gives `station` to.
pub fn chosen(station: RadioId, replicas: &[String]) -> Option<&str> {
    replicas
        .iter()
        .max_by_key(|r| fnv1a(&[&station.to_le_bytes(), r.as_bytes()]))
        .map(String::as_str)
}

#[derive(Debug)]
pub struct Supervisor {
    ctx: Arc<Context>,
    running: HashMap<RadioId, Running>,
    /// Free stations seen at the last scan, and for how many scans in a row.
    unclaimed: HashMap<RadioId, u32>,
    /// Live replicas, and for how many scans in a row they were seen.
    seen: HashMap<String, u32>,
    /// Stations handed over, and when.
    handed: HashMap<RadioId, std::time::Instant>,
}

impl Supervisor {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            running: HashMap::new(),
            unclaimed: HashMap::new(),
            seen: HashMap::new(),
            handed: HashMap::new(),
        }
    }

    /// Scans until `stop`; then stops every listener and releases its lease.
    pub async fn run(mut self, beat: Heartbeat, stop: CancellationToken) {
        let every = self.ctx.config.scan_every;
        let me = self.ctx.config.replica.clone();
        let presence = format!("{REPLICA_LEASES}{me}");
        // Be seen before taking anything, so that replicas starting
        // together hash over each other.
        if let Err(e) = self
            .ctx
            .storage
            .leases
            .acquire(&presence, &me, self.ctx.config.lease)
            .await
        {
            tracing::warn!(error = %e, "cannot register this replica");
        }
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            beat.pace().await;
            beat.beat();
            if let Err(e) = self.scan(&presence).await {
                tracing::warn!(error = %e, "station scan failed");
            }
            self.ctx.meters.held.set(self.running.len() as i64);
        }
        self.stop_all().await;
        let _ = self.ctx.storage.leases.release(&presence, &me).await;
    }

    async fn scan(&mut self, presence: &str) -> hendu_storage::Result<()> {
        let ctx = self.ctx.clone();
        let (leases, me, ttl) = (&ctx.storage.leases, &ctx.config.replica, ctx.config.lease);
        leases.acquire(presence, me, ttl).await?;
        // Renew first: a station whose lease went elsewhere stops now.
        let mut lost = Vec::new();
        let mut handed = Vec::new();
        for (&id, running) in &mut self.running {
            if running.handover_since.is_some_and(|since| {
                running.task.is_finished() || since.elapsed() >= HANDOVER_LIMIT
            }) {
                handed.push(id);
                continue;
            }
            // Unrenewed, the listener stops itself at its deadline.
            let sent = tokio::time::Instant::now();
            match leases.acquire(&station_lease(id), me, ttl).await {
                Ok(true) => {
                    running.lease.send_replace(lease_deadline(sent, ttl));
                }
                Ok(false) => lost.push(id),
                Err(e) => tracing::warn!(radio = id, error = %e, "cannot renew a station's lease"),
            }
            if running.task.is_finished() {
                lost.push(id);
            }
        }
        for id in lost {
            tracing::warn!(
                radio = id,
                "the station's lease is held elsewhere now; stopping"
            );
            self.stop_one(id, false).await;
        }
        for id in handed {
            tracing::info!(radio = id, "station handed over");
            self.handed.insert(id, std::time::Instant::now());
            self.stop_one(id, true).await;
            ctx.meters.handovers.inc();
        }
        let radios = ctx.storage.relational.radios().await?;
        let wanted: HashMap<RadioId, Radio> = radios
            .into_iter()
            .filter(|r| r.enabled)
            .map(|r| (r.id, r))
            .collect();
        // Disabled, deleted or changed stations stop (a changed one starts again below).
        let gone: Vec<RadioId> = self
            .running
            .iter()
            .filter(|(id, r)| wanted.get(id) != Some(&r.radio))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            tracing::info!(radio = id, "station disabled, deleted or changed; stopping");
            self.stop_one(id, true).await;
        }
        let replicas: Vec<String> = leases
            .held(REPLICA_LEASES)
            .await?
            .into_iter()
            .filter_map(|(name, _)| name.strip_prefix(REPLICA_LEASES).map(str::to_owned))
            .collect();
        self.seen = replicas
            .iter()
            .map(|r| (r.clone(), self.seen.get(r).copied().unwrap_or(0) + 1))
            .collect();
        let station_leases = leases.held(STATION_LEASES).await?;
        let mut holders: HashSet<RadioId> = HashSet::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (name, holder) in station_leases {
            if let Some(id) = name
                .strip_prefix(STATION_LEASES)
                .and_then(|i| i.parse().ok())
            {
                holders.insert(id);
                *counts.entry(holder).or_insert(0) += 1;
            }
        }
        let mut ids: Vec<&RadioId> = wanted.keys().collect();
        ids.sort();
        let mut unclaimed = HashMap::new();
        for &id in ids {
            if self.running.contains_key(&id) || holders.contains(&id) {
                continue;
            }
            let scans = self.unclaimed.get(&id).copied().unwrap_or(0) + 1;
            unclaimed.insert(id, scans);
            let mine = chosen(id, &replicas).is_none_or(|r| r == me.as_str());
            // Its chosen replica first; after two scans anyone; one this
            // replica handed over, only after four.
            let take = if self.handed.contains_key(&id) {
                scans > 4
            } else {
                mine || scans > 2
            };
            if !take || self.running.len() >= ctx.config.max_stations {
                continue;
            }
            let sent = tokio::time::Instant::now();
            if leases.acquire(&station_lease(id), me, ttl).await? {
                unclaimed.remove(&id);
                self.start(wanted[&id].clone(), lease_deadline(sent, ttl));
            }
        }
        self.unclaimed = unclaimed;
        self.rebalance(&replicas, &counts);
        Ok(())
    }

    /// Asks listeners of stations that hashing gives to another settled,
    /// not full, replica to hand over after their next sample.
    fn rebalance(&mut self, replicas: &[String], counts: &HashMap<String, usize>) {
        let me = self.ctx.config.replica.as_str();
        let max = self.ctx.config.max_stations;
        self.handed
            .retain(|_, when| when.elapsed() < HANDOVER_QUIET);
        let leaving = self
            .running
            .values()
            .filter(|r| r.handover_since.is_some())
            .count();
        let mut ids: Vec<RadioId> = self
            .running
            .iter()
            .filter(|(id, r)| r.handover_since.is_none() && !self.handed.contains_key(id))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        let mut asked = leaving;
        for id in ids {
            if asked >= HANDOVER_PER_SCAN {
                break;
            }
            let Some(to) = chosen(id, replicas) else {
                continue;
            };
            if to == me
                || self.seen.get(to).copied().unwrap_or(0) < 2
                || counts.get(to).copied().unwrap_or(0) >= max
            {
                continue;
            }
            let running = self.running.get_mut(&id).expect("listed above");
            tracing::info!(
                radio = id,
                to,
                "handing the station over after its next sample"
            );
            running.handover.store(true, Ordering::Release);
            running.handover_since = Some(std::time::Instant::now());
            asked += 1;
        }
    }

    fn start(&mut self, radio: Radio, deadline: tokio::time::Instant) {
        let id = radio.id;
        tracing::info!(radio = id, name = %radio.name, url = %radio.stream_url, "listening to a station");
        let (lease, lease_rx) = watch::channel(deadline);
        let handover = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener::listen(
            self.ctx.clone(),
            radio.clone(),
            listener::Flags {
                lease: lease_rx,
                handover: handover.clone(),
            },
            stop.clone(),
        ));
        self.running.insert(
            id,
            Running {
                radio,
                lease,
                handover,
                handover_since: None,
                stop,
                task,
            },
        );
    }

    /// Stops a listener; `release` gives its lease back (not when it was lost).
    async fn stop_one(&mut self, id: RadioId, release: bool) {
        let Some(running) = self.running.remove(&id) else {
            return;
        };
        running.lease.send_replace(tokio::time::Instant::now());
        running.stop.cancel();
        let _ = running.task.await;
        if release {
            let _ = self
                .ctx
                .storage
                .leases
                .release(&station_lease(id), &self.ctx.config.replica)
                .await;
        }
        self.ctx.meters.forget(id);
    }

    async fn stop_all(&mut self) {
        for running in self.running.values() {
            running.lease.send_replace(tokio::time::Instant::now());
            running.stop.cancel();
        }
        let ids: Vec<RadioId> = self.running.keys().copied().collect();
        for id in ids {
            self.stop_one(id, true).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_hashing_spreads_stations_and_moves_few_when_a_replica_goes() {
        let replicas: Vec<String> = (0..3).map(|i| format!("monitor-{i}")).collect();
        let mut counts = HashMap::new();
        for id in 0..300 {
            *counts.entry(chosen(id, &replicas).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(
            counts.values().all(|&n| (70..=130).contains(&n)),
            "{counts:?}"
        );
        // Without monitor-2 only its stations move.
        let two = &replicas[..2];
        for id in 0..300 {
            let before = chosen(id, &replicas).unwrap();
            if before != "monitor-2" {
                assert_eq!(chosen(id, two), Some(before));
            }
        }
        assert_eq!(chosen(1, &[]), None);
    }
}
