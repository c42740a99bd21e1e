//! A TCP balancer in front of a service's replicas on the local target:
//! each new connection goes to the next live replica in turn (a
//! Kubernetes Service does the same per connection), so the load reaches
//! every replica and follows them as they are killed, restarted or scaled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The replicas' addresses, updated as they change.
#[derive(Debug, Clone, Default)]
pub struct Backends(Arc<RwLock<Vec<SocketAddr>>>);

impl Backends {
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    fn pick(&self, turn: usize) -> Option<SocketAddr> {
        let addrs = self.0.read().unwrap_or_else(|e| e.into_inner());
        (!addrs.is_empty()).then(|| addrs[turn % addrs.len()])
    }
}

/// Balances connections on `listener` over `backends` until `stop`.
pub async fn serve(listener: TcpListener, backends: Backends, stop: CancellationToken) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        let backends = backends.clone();
        let turn = turn.clone();
        tokio::spawn(async move {
            // A dead replica refuses at once: try the others before giving up.
            let tries = backends.0.read().map(|a| a.len()).unwrap_or(0).max(1);
            for _ in 0..tries {
                let Some(addr) = backends.pick(turn.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                if let Ok(mut upstream) = TcpStream::connect(addr).await {
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
        });
    }
}

/// The address of `http://host:port`.
pub fn addr_of(base: &str) -> Option<SocketAddr> {
    base.strip_prefix("http://")?.parse().ok()
}
