//! [`WorkQueue`] and [`EventBus`] on Redis.
//!
//! - Each [`Queue`] is a Redis Stream `<prefix>queue:<name>` read by its
//!   consumer group (`Queue::group`; the samples have one per recognition
//!   shard), created from the start of the stream by its first consumer (and
//!   the filter's at connect time), so entries pushed before any consumer
//!   existed are not lost. A read first takes over entries another consumer
//!   left unacknowledged longer than the claim timeout (`XAUTOCLAIM`), then
//!   reads new ones (`XREADGROUP ... >`). An entry is acknowledged and, once
//!   no group needs it any more (every group on the stream, and every sibling
//!   shard whether its group exists yet or not, has read and acknowledged
//!   it), deleted, in one script: the stream holds only unfinished work.
//! - Taking over is one Lua script: `XAUTOCLAIM`, each entry's delivery count
//!   from `XPENDING`, and an entry delivered `max_deliveries` times already
//!   moved to the stream `<prefix>dead:<name>` (fields `p` payload, `r`
//!   reason, `n` deliveries, `e` its id in the queue) and acknowledged and
//!   deleted from the queue instead of being handed out.
//! - A command that meets `NOGROUP` (the server lost its data: a restart
//!   without persistence, `FLUSHALL`) creates the group again from the start
//!   of the stream, so entries pushed since are delivered, and carries on.
//! - Events go over pub/sub on `<prefix>events` as JSON.
//! - A lease is the key `<prefix>lease:<name>` holding its holder, with an
//!   expiry; taking, renewing and giving it up are Lua scripts, so that a
//!   holder never extends or deletes a lease that expired and went to another.
//!
//! Commands share one multiplexed connection that reconnects with backoff
//! (`ConnectionManager`); blocking reads have a connection of their own so
//! that they never hold up the other commands.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Script};
use tokio::sync::Mutex;

use crate::config::QueueConfig;
use crate::error::{Result, StorageError};
use crate::events::{Event, EventBus};
use crate::leases::Leases;
use crate::model::from_unix_ms;
use crate::queue::{
    Backlog, DeadCounts, DeadLetter, DeadReason, Delivery, Queue, WorkQueue, bad_cursor,
};

const PAYLOAD: &str = "p";

pub struct RedisStore {
    client: Client,
    commands: ConnectionManager,
    /// For blocking reads; re-opened after an error.
    reader: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    queue: QueueConfig,
    dead: DeadCounts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects and creates the consumer groups.
    ///
    /// # Errors
    /// [`StorageError`] if the URL is bad or the server does not answer.
    pub async fn connect(url: &str, prefix: &str, queue: QueueConfig) -> Result<Self> {
        let client = Client::open(url)?;
        let commands = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_number_of_retries(6)
                .set_max_delay(Duration::from_secs(2)),
        )
        .await?;
        let store = Self {
            client,
            commands,
            reader: Mutex::new(None),
            prefix: prefix.to_owned(),
            queue,
            dead: DeadCounts::default(),
        };
        // The samples' groups are made by their recognisers, whose shards
        // only they know: a group nobody reads would keep every entry.
        store.create_group(Queue::RawResults).await?;
        Ok(store)
    }

    fn key(&self, queue: Queue) -> String {
        format!("{}queue:{}", self.prefix, queue.name())
    }

    /// The queue's dead letters (a stream without a group).
    fn dead_key(&self, queue: Queue) -> String {
        format!("{}dead:{}", self.prefix, queue.name())
    }

    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    async fn create_group(&self, queue: Queue) -> Result<()> {
        let mut con = self.commands.clone();
        let created: redis::RedisResult<()> = con
            .xgroup_create_mkstream(self.key(queue), queue.group(), "0")
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Deletes every key under the prefix (tests clean up with it).
    ///
    /// # Errors
    /// [`StorageError::Redis`] on a failed command.
    pub async fn delete_all(&self) -> Result<()> {
        let mut con = self.commands.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = con
                .scan_match::<_, String>(format!("{}*", self.prefix))
                .await?;
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
        }
        if !keys.is_empty() {
            let _: () = con.del(keys).await?;
        }
        Ok(())
    }

    async fn reader(&self) -> Result<MultiplexedConnection> {
        let mut slot = self.reader.lock().await;
        if let Some(con) = slot.as_ref() {
            return Ok(con.clone());
        }
        // No response timeout: the server holds a blocking read for as long as asked.
        let con = self
            .client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await?;
        *slot = Some(con.clone());
        Ok(con)
    }
}

/// The consumer group is gone: `NOGROUP`, or `UNBLOCKED` for a blocked read
/// whose stream was deleted under it.
fn is_nogroup(e: &redis::RedisError) -> bool {
    // Inside a script the code may only be in the message (older servers).
    matches!(e.code(), Some("NOGROUP" | "UNBLOCKED")) || e.to_string().contains("NOGROUP")
}

/// The groups an entry waits for before it leaves the stream, as the
/// scripts take them.
fn needed(queue: Queue) -> String {
    queue.needed_groups().join(",")
}

/// A stream entry id (`<ms>-<seq>`); anything else names no entry.
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Lua the scripts share. `release(key, id, needed)` deletes entry `id`
/// once no group needs it: every group on the stream has read it (its last
/// delivered id is at or past it) and none holds it unacknowledged, and
/// every group named in `needed` (comma-separated) exists. Returns 1 if it
/// deleted it.
const QUEUE_LUA: &str = r"
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function later(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local function release(key, id, needed)
  if redis.call('EXISTS', key) == 0 then return 0 end
  local seen = {}
  for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local g = fields(flat)
    seen[g['name']] = true
    if later(id, g['last-delivered-id']) then return 0 end
    if #redis.call('XPENDING', key, g['name'], id, id, 1) > 0 then return 0 end
  end
  for name in string.gmatch(needed, '[^,]+') do
    if not seen[name] then return 0 end
  end
  redis.call('XDEL', key, id)
  return 1
end
";

/// Acknowledges an entry, and deletes it if no group needs it any more.
/// KEYS: stream. ARGV: group, id, needed groups.
const ACK: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return release(KEYS[1], ARGV[2], ARGV[3])
";

/// The group's backlog: `{waiting, pending}`. Waiting entries are those past
/// the group's last delivered id: the stream's length less those pending
/// when the group is the stream's only one and needs no other (ARGV 3 is
/// 1; entries it finished are gone), else counted (up to ARGV 2). A group
/// not made yet has the whole stream waiting.
/// KEYS: stream. ARGV: group, most entries counted, alone.
const BACKLOG: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local length = redis.call('XLEN', KEYS[1])
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, flat in ipairs(groups) do
  local g = fields(flat)
  if g['name'] == ARGV[1] then
    if #groups == 1 and ARGV[3] == '1' then return {length - g['pending'], g['pending']} end
    local past = redis.call('XRANGE', KEYS[1], '(' .. g['last-delivered-id'], '+', 'COUNT', ARGV[2])
    return {#past, g['pending']}
  end
end
return {length, 0}
";

/// Takes over entries idle beyond the claim timeout (`XAUTOCLAIM`, which
/// counts the delivery), reads each one's count (`XPENDING`), and moves
/// those delivered more than `max_deliveries` times to the dead letters
/// instead of handing them out, all in one atomic step.
/// KEYS: stream, dead letters. ARGV: group, consumer, min idle ms, count,
/// max deliveries, needed groups. Returns `{{id, payload, deliveries}...}, moved`.
const CLAIM: &str = r"
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local max = tonumber(ARGV[5])
local out = {}
local dead = 0
for _, entry in ipairs(claimed[2]) do
  if type(entry) == 'table' and type(entry[2]) == 'table' then
    local id = entry[1]
    local payload = ''
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then payload = fields[i + 1] end
    end
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local n = 1
    if pending[1] then n = pending[1][4] end
    if n > max then
      local times = n - 1
      redis.call('XADD', KEYS[2], '*', 'p', payload,
        'r', 'delivered ' .. times .. ' times without being acknowledged', 'n', times, 'e', id)
      redis.call('XACK', KEYS[1], ARGV[1], id)
      release(KEYS[1], id, ARGV[6])
      dead = dead + 1
    else
      out[#out + 1] = {id, payload, n}
    end
  end
end
return {out, dead}
";

/// Moves an entry to the dead letters if it is still in the stream (for
/// this group: other shards' groups go on with it).
/// KEYS: stream, dead letters. ARGV: group, id, reason, needed groups.
/// Returns 1 if moved.
const BURY: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then return 0 end
local payload = ''
local fields = found[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'p' then payload = fields[i + 1] end
end
local n = 0
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(pending) == 'table' and pending[1] then n = pending[1][4] end
redis.call('XADD', KEYS[2], '*', 'p', payload, 'r', ARGV[3], 'n', n, 'e', ARGV[2])
redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
release(KEYS[1], ARGV[2], ARGV[4])
return 1
";

/// Puts a dead letter back on its stream as a new entry.
/// KEYS: stream, dead letters. ARGV: dead letter id. Returns 1 if moved.
const REQUEUE: &str = r"
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local payload = ''
local fields = found[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'p' then payload = fields[i + 1] end
end
redis.call('XADD', KEYS[1], '*', 'p', payload)
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
";

/// Resets the idle time of an entry the consumer holds, without counting a
/// delivery (`XCLAIM ... JUSTID`). KEYS: stream. ARGV: group, consumer, id.
const HOLD: &str = r"
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
";

static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[QUEUE_LUA, CLAIM].concat()));
static BURY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[QUEUE_LUA, BURY].concat()));
static ACK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[QUEUE_LUA, ACK].concat()));
static BACKLOG_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&[QUEUE_LUA, BACKLOG].concat()));
static REQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REQUEUE));
static HOLD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HOLD));

fn dead_letter(queue: Queue, entry: &StreamId) -> DeadLetter {
    // The id of an XADD '*' entry starts with the server's clock in ms.
    let ms = entry
        .id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<i64>().ok())
        .unwrap_or_default();
    DeadLetter {
        id: entry.id.clone(),
        queue,
        payload: entry.get(PAYLOAD).unwrap_or_default(),
        reason: entry.get("r").unwrap_or_default(),
        deliveries: entry.get("n").unwrap_or_default(),
        dead_at: from_unix_ms(ms),
    }
}

impl RedisStore {
    /// Runs `op`; when the consumer group is gone (the server lost its data:
    /// restarted without persistence, FLUSHALL, the key evicted), creates it
    /// again from the start of the stream, so that entries pushed since are
    /// delivered, and runs `op` once more.
    async fn in_group<T, F, Fut>(&self, queue: Queue, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op().await {
            Err(e) if is_nogroup(&e) => {
                tracing::warn!(
                    queue = queue.name(),
                    group = queue.group(),
                    "the consumer group was gone (Redis lost its data?); created it again"
                );
                self.create_group(queue).await?;
                Ok(op().await?)
            }
            other => Ok(other?),
        }
    }

    /// Stale entries taken over, minus those moved to the dead letters.
    async fn claim_stale(&self, queue: Queue, consumer: &str, max: usize) -> Result<Vec<Delivery>> {
        let (key, dead) = (self.key(queue), self.dead_key(queue));
        let (claimed, buried): (Vec<(String, Vec<u8>, u32)>, u64) = self
            .in_group(queue, || {
                let mut con = self.commands.clone();
                let mut invocation = CLAIM_SCRIPT.key(&key);
                invocation
                    .key(&dead)
                    .arg(queue.group())
                    .arg(consumer)
                    .arg(self.queue.claim_after.as_millis() as u64)
                    .arg(max)
                    .arg(self.queue.max_deliveries.max(1))
                    .arg(needed(queue));
                async move { invocation.invoke_async(&mut con).await }
            })
            .await?;
        if buried > 0 {
            tracing::warn!(
                queue = queue.name(),
                entries = buried,
                "entries delivered too often without being acknowledged moved to the dead letters"
            );
            self.dead.add(queue, DeadReason::MaxDeliveries, buried);
        }
        Ok(claimed
            .into_iter()
            .map(|(id, payload, deliveries)| Delivery {
                id,
                payload,
                redelivered: true,
                deliveries,
            })
            .collect())
    }

    /// New entries (`XREADGROUP ... >`), blocking up to `block` if given.
    async fn read_new(
        &self,
        queue: Queue,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Delivery>> {
        let key = self.key(queue);
        let mut options = StreamReadOptions::default()
            .group(queue.group(), consumer)
            .count(count);
        if let Some(wait) = block {
            options = options.block(wait.as_millis().max(1) as usize);
        }
        let reply: Option<StreamReadReply> = self
            .in_group(queue, || {
                let (key, options) = (&key, &options);
                async move {
                    if block.is_none() {
                        let mut con = self.commands.clone();
                        return con.xread_options(&[key], &[">"], options).await;
                    }
                    let mut reader = self.reader().await.map_err(|e| match e {
                        StorageError::Redis(e) => e,
                        other => redis::RedisError::from(std::io::Error::other(other.to_string())),
                    })?;
                    let reply = reader.xread_options(&[key], &[">"], options).await;
                    if reply.is_err() {
                        *self.reader.lock().await = None;
                    }
                    reply
                }
            })
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|stream| stream.ids)
            .map(|e| Delivery {
                id: e.id.clone(),
                payload: e.get(PAYLOAD).unwrap_or_default(),
                redelivered: false,
                deliveries: 1,
            })
            .collect())
    }
}

#[async_trait]
impl WorkQueue for RedisStore {
    async fn ping(&self) -> Result<()> {
        let mut con = self.commands.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        Ok(())
    }

    async fn push(&self, queue: Queue, payload: &[u8]) -> Result<String> {
        let mut con = self.commands.clone();
        Ok(con
            .xadd(self.key(queue), "*", &[(PAYLOAD, payload)])
            .await?)
    }

    async fn read(
        &self,
        queue: Queue,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let mut out = self.claim_stale(queue, consumer, max).await?;
        if out.len() >= max {
            return Ok(out);
        }
        let block = (out.is_empty() && !wait.is_zero()).then_some(wait);
        out.extend(
            self.read_new(queue, consumer, max - out.len(), block)
                .await?,
        );
        Ok(out)
    }

    async fn ack(&self, queue: Queue, id: &str) -> Result<()> {
        if !is_stream_id(id) {
            return Ok(());
        }
        let (key, group, needed) = (self.key(queue), queue.group(), needed(queue));
        self.in_group(queue, || {
            let mut con = self.commands.clone();
            let mut invocation = ACK_SCRIPT.key(&key);
            invocation.arg(&group).arg(id).arg(&needed);
            async move { invocation.invoke_async::<i64>(&mut con).await }
        })
        .await?;
        Ok(())
    }

    async fn hold(&self, queue: Queue, consumer: &str, id: &str) -> Result<bool> {
        if !is_stream_id(id) {
            return Ok(false);
        }
        let mut con = self.commands.clone();
        let held: redis::RedisResult<i64> = HOLD_SCRIPT
            .key(self.key(queue))
            .arg(queue.group())
            .arg(consumer)
            .arg(id)
            .invoke_async(&mut con)
            .await;
        match held {
            // A new group holds nothing.
            Err(e) if is_nogroup(&e) => self.create_group(queue).await.map(|()| false),
            other => Ok(other? == 1),
        }
    }

    async fn backlog(&self, queue: Queue) -> Result<Backlog> {
        let mut con = self.commands.clone();
        let (waiting, pending): (u64, u64) = BACKLOG_SCRIPT
            .key(self.key(queue))
            .arg(queue.group())
            .arg(crate::queue::RECONCILE_SCAN + 1)
            .arg(u8::from(queue.needed_groups() == [queue.group()]))
            .invoke_async(&mut con)
            .await?;
        let dead: u64 = con.xlen(self.dead_key(queue)).await?;
        Ok(Backlog {
            waiting,
            pending,
            dead,
        })
    }

    async fn entries(
        &self,
        queue: Queue,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let start = match after {
            Some(a) if is_stream_id(a) => format!("({a}"),
            Some(_) => return Err(bad_cursor()),
            None => "-".to_owned(),
        };
        let mut con = self.commands.clone();
        let range: StreamRangeReply = con
            .xrange_count(self.key(queue), start, "+", limit.max(1))
            .await?;
        Ok(range
            .ids
            .into_iter()
            .map(|e| {
                let payload = e.get(PAYLOAD).unwrap_or_default();
                (e.id, payload)
            })
            .collect())
    }

    async fn dead_letter(&self, queue: Queue, delivery: &Delivery, reason: &str) -> Result<()> {
        if !is_stream_id(&delivery.id) {
            return Ok(());
        }
        let mut con = self.commands.clone();
        let moved: i64 = BURY_SCRIPT
            .key(self.key(queue))
            .key(self.dead_key(queue))
            .arg(queue.group())
            .arg(&delivery.id)
            .arg(reason)
            .arg(needed(queue))
            .invoke_async(&mut con)
            .await?;
        self.dead
            .add(queue, DeadReason::Refused, u64::from(moved == 1));
        Ok(())
    }

    async fn dead_letters(
        &self,
        queue: Queue,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let start = match after {
            Some(a) if is_stream_id(a) => format!("({a}"),
            Some(_) => return Err(bad_cursor()),
            None => "-".to_owned(),
        };
        let mut con = self.commands.clone();
        let range: StreamRangeReply = con
            .xrange_count(self.dead_key(queue), start, "+", limit.max(1))
            .await?;
        Ok(range.ids.iter().map(|e| dead_letter(queue, e)).collect())
    }

    async fn requeue_dead_letter(&self, queue: Queue, id: &str) -> Result<bool> {
        if !is_stream_id(id) {
            return Ok(false);
        }
        let mut con = self.commands.clone();
        let moved: i64 = REQUEUE_SCRIPT
            .key(self.key(queue))
            .key(self.dead_key(queue))
            .arg(id)
            .invoke_async(&mut con)
            .await?;
        Ok(moved == 1)
    }

    async fn discard_dead_letter(&self, queue: Queue, id: &str) -> Result<bool> {
        if !is_stream_id(id) {
            return Ok(false);
        }
        let mut con = self.commands.clone();
        let deleted: u64 = con.xdel(self.dead_key(queue), &[id]).await?;
        Ok(deleted == 1)
    }

    fn dead_counts(&self) -> DeadCounts {
        self.dead.clone()
    }
}

#[async_trait]
impl EventBus for RedisStore {
    async fn publish(&self, event: &Event) -> Result<()> {
        let body = serde_json::to_string(event).map_err(StorageError::corrupt)?;
        let mut con = self.commands.clone();
        let _: () = con.publish(self.channel(), body).await?;
        Ok(())
    }

    /// The stream ends if the connection drops; subscribe again (and resync
    /// whatever the events keep current: events sent meanwhile are lost).
    async fn subscribe(&self) -> Result<BoxStream<'static, Event>> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel()).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move {
                let body: Vec<u8> = msg.get_payload().ok()?;
                match serde_json::from_slice(&body) {
                    Ok(event) => Some(event),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a malformed event");
                        None
                    }
                }
            })
            .boxed())
    }
}

/// Take the lease if free, renew it if ours.
/// `s` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Take the lease if free (with the next fencing token), renew it if ours
/// (with its token). The token counter outlives the lease, so tokens only grow.
const ACQUIRE_FENCED: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return redis.call('INCR', KEYS[2])
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local token = redis.call('GET', KEYS[2])
  if token == false then
    return redis.call('INCR', KEYS[2])
  end
  return tonumber(token)
end
return -1
";

/// Give the lease up only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[async_trait]
impl Leases for RedisStore {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let mut con = self.commands.clone();
        let taken: i64 = redis::Script::new(ACQUIRE)
            .key(format!("{}lease:{name}", self.prefix))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut con)
            .await?;
        Ok(taken == 1)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<()> {
        let mut con = self.commands.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(format!("{}lease:{name}", self.prefix))
            .arg(holder)
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    async fn acquire_fenced(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<crate::leases::Fence>> {
        let mut con = self.commands.clone();
        let token: i64 = redis::Script::new(ACQUIRE_FENCED)
            .key(format!("{}lease:{name}", self.prefix))
            .key(format!("{}fence:{name}", self.prefix))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut con)
            .await?;
        Ok((token > 0).then(|| crate::leases::Fence {
            name: name.to_owned(),
            token: token as u64,
        }))
    }

    async fn held(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut con = self.commands.clone();
        let key_prefix = format!("{}lease:", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        {
            let pattern = format!("{}*", glob_escape(&format!("{key_prefix}{prefix}")));
            let mut iter = con.scan_match::<_, String>(pattern).await?;
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort();
        // A lease that expired between the scan and the read reads as nil.
        let holders: Vec<Option<String>> = con.mget(&keys).await?;
        Ok(keys
            .into_iter()
            .zip(holders)
            .filter_map(|(key, holder)| Some((key.strip_prefix(&key_prefix)?.to_owned(), holder?)))
            .collect())
    }
}
