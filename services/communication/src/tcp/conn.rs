//! What both protocol versions do with a connection: admit it within the
//! limits, read with a deadline into a buffer that holds nothing while the
//! connection is idle, write with a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hendu_sensor_protocol::Code;
use hendu_service::health::Heartbeat;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ProtocolLabels, Tcp};

/// How often an accept loop beats its heartbeat.
pub const BEAT: Duration = Duration::from_secs(5);
/// The most read at once into a connection's buffer.
const READ_CHUNK: usize = 64 << 10;

/// The connection limits: in all, and per client address.
#[derive(Debug, Clone)]
pub struct Gate {
    total: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
}

/// A connection admitted; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    addr: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

impl Gate {
    pub fn new(max_connections: usize, max_per_address: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_connections.max(1))),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            max_per_address: max_per_address.max(1),
        }
    }

    /// A place for a connection from `addr`, or `busy`.
    pub fn admit(&self, addr: IpAddr) -> Option<Admitted> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(addr).or_insert(0);
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(Admitted {
            _permit: permit,
            addr,
            per_address: self.per_address.clone(),
        })
    }
}

/// Why reading stopped.
#[derive(Debug)]
pub enum Stop {
    /// The deadline passed.
    Timeout,
    /// The peer closed, or the connection broke.
    Closed,
    /// The service is stopping.
    ShuttingDown,
}

/// A client's connection and what it sent that is not yet taken.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub buf: Vec<u8>,
    write_timeout: Duration,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, write_timeout: Duration) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            peer,
            buf: Vec::new(),
            write_timeout,
        }
    }

    /// Reads what has arrived (at least one byte, at most `want` or a
    /// chunk), waiting until `deadline`, or until `stop`. No buffer is held
    /// while waiting, and no more is read than asked for.
    ///
    /// # Errors
    /// [`Stop`].
    pub async fn fill(
        &mut self,
        want: usize,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<usize, Stop> {
        let n = want.clamp(1, READ_CHUNK);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Err(Stop::ShuttingDown),
                ready = tokio::time::timeout_at(deadline, self.stream.readable()) => match ready {
                    Err(_) => return Err(Stop::Timeout),
                    Ok(Err(_)) => return Err(Stop::Closed),
                    Ok(Ok(())) => {}
                },
            }
            let len = self.buf.len();
            self.buf.resize(len + n, 0);
            let read = self.stream.try_read(&mut self.buf[len..]);
            self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(Stop::Closed),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.release_if_empty();
                }
                Err(_) => return Err(Stop::Closed),
            }
        }
    }

    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }

    /// Takes `n` bytes from the front of the buffer; gives the buffer's
    /// memory back when it is left empty (an idle connection holds none).
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.release_if_empty();
    }

    /// After a refusal: closes the sending side and reads what the client
    /// is still sending (1 MiB and 1 s at most), so that closing does not
    /// reset the connection before the client has read the refusal.
    pub async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut left: usize = 1 << 20;
        let mut sink = [0u8; 4096];
        let until = Instant::now() + Duration::from_secs(1);
        while left > 0 {
            match tokio::time::timeout_at(until, self.stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }

    /// Writes `bytes` within the write timeout.
    ///
    /// # Errors
    /// The peer does not take them in time, or the connection broke.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        match tokio::time::timeout(self.write_timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => Err(Stop::Timeout),
        }
    }
}

/// Accepts connections on `listener` until `stop`, admitting each within
/// the limits and running `serve` on it; a connection over a limit is sent
/// `refusal(Code::Busy)` (without waiting for the peer) and closed.
pub async fn accept_loop<F, Fut>(
    tcp: Tcp,
    listener: TcpListener,
    protocol: &'static str,
    beat: Heartbeat,
    stop: CancellationToken,
    refusal: fn(Code, &str) -> Vec<u8>,
    serve: F,
) where
    F: Fn(Tcp, Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut ticks = tokio::time::interval(BEAT);
    loop {
        beat.pace().await;
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => { beat.beat(); continue; }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!(error = %e, protocol, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = tcp.gate.admit(peer.ip()) else {
            tcp.meters.refused(protocol, Code::Busy);
            let _ = stream.try_write(&refusal(
                Code::Busy,
                "too many connections (in all or from this address); retry later",
            ));
            continue;
        };
        let gauge = tcp
            .meters
            .connections
            .get_or_create(&ProtocolLabels { protocol })
            .clone();
        gauge.inc();
        let conn = Conn::new(stream, peer, tcp.limits.write_timeout);
        let work = serve(tcp.clone(), conn);
        tcp.tasks.spawn(async move {
            work.await;
            drop(admitted);
            gauge.dec();
        });
    }
}
