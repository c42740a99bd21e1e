//! Argon2id hashing off the async threads, on two threads of its own.
//!
//! Each argon2id hash or check works through 19 MiB of memory. Run on the
//! runtime's blocking pool, those blocks landed in a different thread's
//! allocator arena almost every time and stayed there: a communication
//! service that had registered twenty devices and checked their secrets sat
//! at 300 MB. On two dedicated threads the same blocks are reused, and the
//! CPU they cost is bounded to two cores' worth whatever the request rate.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Result, StorageError};
use crate::model::{Secret, SecretHash};

const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

fn queue() -> &'static Sender<Job> {
    static QUEUE: OnceLock<Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..THREADS {
            let receiver = receiver.clone();
            let _ = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
        }
        sender
    })
}

async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    queue()
        .send(Box::new(move || {
            let _ = done.send(work());
        }))
        .ok()?;
    result.await.ok()
}

impl SecretHash {
    /// [`SecretHash::of`] on the hashing threads.
    ///
    /// # Errors
    /// [`StorageError::Hash`] if the hasher fails.
    pub async fn hash(secret: &Secret) -> Result<Self> {
        let secret = secret.clone();
        run(move || Self::of(&secret))
            .await
            .unwrap_or_else(|| Err(StorageError::Hash("the hashing threads stopped".into())))
    }

    /// [`SecretHash::verify`] on the hashing threads.
    pub async fn check(&self, secret: &Secret) -> bool {
        let (hash, secret) = (self.clone(), secret.clone());
        run(move || hash.verify(&secret)).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_made_and_checked_on_the_hashing_threads_agree() {
        let secret = Secret::new("correct horse battery");
        let hash = SecretHash::hash(&secret).await.unwrap();
        assert!(hash.check(&secret).await);
        assert!(!hash.check(&Secret::new("wrong horse battery")).await);
    }
}
