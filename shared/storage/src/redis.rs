//! [`WorkQueue`] and [`EventBus`] on Redis.
//!
//! - Each [`Queue`] is a Redis Stream `<prefix>queue:<name>` read by one
//!   consumer group (`Queue::group`) created at connect time from the start of
//!   the stream, so entries pushed before any consumer existed are not lost.
//!   A read first takes over entries another consumer left unacknowledged
//!   longer than the claim timeout (`XAUTOCLAIM`), then reads new ones
//!   (`XREADGROUP ... >`). An acknowledged entry is removed (`XACK` + `XDEL`
//!   in one `MULTI`), so the stream holds only unfinished work.
//! - Events go over pub/sub on `<prefix>events` as JSON.
//! - A lease is the key `<prefix>lease:<name>` holding its holder, with an
//!   expiry; taking, renewing and giving it up are Lua scripts, so that a
//!   holder never extends or deletes a lease that expired and went to another.
//!
//! Commands share one multiplexed connection that reconnects with backoff
//! (`ConnectionManager`); blocking reads have a connection of their own so
//! that they never hold up the other commands.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use tokio::sync::Mutex;

use crate::config::QueueConfig;
use crate::error::{Result, StorageError};
use crate::events::{Event, EventBus};
use crate::leases::Leases;
use crate::queue::{Backlog, Delivery, Queue, WorkQueue};

const PAYLOAD: &str = "p";
const QUEUES: [Queue; 2] = [Queue::Samples, Queue::RawResults];

pub struct RedisStore {
    client: Client,
    commands: ConnectionManager,
    /// For blocking reads; re-opened after an error.
    reader: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    queue: QueueConfig,
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
        };
        for q in QUEUES {
            store.create_group(q).await?;
        }
        Ok(store)
    }

    fn key(&self, queue: Queue) -> String {
        format!("{}queue:{}", self.prefix, queue.name())
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

fn delivery(entry: &StreamId, redelivered: bool) -> Delivery {
    Delivery {
        id: entry.id.clone(),
        payload: entry.get(PAYLOAD).unwrap_or_default(),
        redelivered,
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
        let key = self.key(queue);
        let mut con = self.commands.clone();
        let claimed: StreamAutoClaimReply = con
            .xautoclaim_options(
                &key,
                queue.group(),
                consumer,
                self.queue.claim_after.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(max),
            )
            .await?;
        let mut out: Vec<Delivery> = claimed.claimed.iter().map(|e| delivery(e, true)).collect();
        if out.len() >= max {
            return Ok(out);
        }
        let mut options = StreamReadOptions::default()
            .group(queue.group(), consumer)
            .count(max - out.len());
        let blocking = out.is_empty() && !wait.is_zero();
        if blocking {
            options = options.block(wait.as_millis().max(1) as usize);
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> = if blocking {
            let mut reader = self.reader().await?;
            let reply = reader.xread_options(&[&key], &[">"], &options).await;
            if reply.is_err() {
                *self.reader.lock().await = None;
            }
            reply
        } else {
            con.xread_options(&[&key], &[">"], &options).await
        };
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                // The stream was deleted under us (FLUSHALL, key eviction): recreate.
                self.create_group(queue).await?;
                None
            }
            other => other?,
        };
        for stream in reply.into_iter().flat_map(|r| r.keys) {
            out.extend(stream.ids.iter().map(|e| delivery(e, false)));
        }
        Ok(out)
    }

    async fn ack(&self, queue: Queue, id: &str) -> Result<()> {
        let key = self.key(queue);
        let mut con = self.commands.clone();
        let _: () = redis::pipe()
            .atomic()
            .xack(&key, queue.group(), &[id])
            .ignore()
            .xdel(&key, &[id])
            .ignore()
            .query_async(&mut con)
            .await?;
        Ok(())
    }

    async fn backlog(&self, queue: Queue) -> Result<Backlog> {
        let key = self.key(queue);
        let mut con = self.commands.clone();
        let length: u64 = con.xlen(&key).await?;
        let pending: redis::streams::StreamPendingReply = con.xpending(&key, queue.group()).await?;
        let pending = pending.count() as u64;
        Ok(Backlog {
            waiting: length.saturating_sub(pending),
            pending,
        })
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
}
