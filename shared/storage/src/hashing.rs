//! Argon2id hashing off the async threads, on two threads of its own, each
//! with its working memory allocated once.
//!
//! Each argon2id hash or check works through 19 MiB of memory. Allocated and
//! freed per call, those blocks were kept by the C allocator (glibc raises
//! its mmap threshold after the first free, and the heap then fragments): a
//! communication service that had registered thirty devices sat at 340 MB,
//! against 13 MB with a fixed threshold. Here each hashing thread keeps one
//! buffer and reuses it, so hashing costs at most two buffers of memory and
//! two cores of CPU, whatever the request rate.

use std::cell::RefCell;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Result, StorageError};
use crate::model::{Secret, SecretHash};

const THREADS: usize = 2;

thread_local! {
    static MEMORY: RefCell<Vec<argon2::Block>> = const { RefCell::new(Vec::new()) };
}

/// The raw argon2id hash of `password` into `out`, in this thread's reused memory.
pub(crate) fn argon2id(
    params: &argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let hasher = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    MEMORY.with_borrow_mut(|memory| {
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        hasher.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

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

    #[test]
    fn hashes_are_standard_argon2id_phc_strings() {
        use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
        let secret = Secret::new("correct horse battery");
        let ours = SecretHash::of(&secret).unwrap();
        assert!(ours.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed = PasswordHash::new(ours.as_str()).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok(),
            "the argon2 crate accepts our hashes"
        );
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let theirs = argon2::Argon2::default()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(
            SecretHash(theirs.clone()).verify(&secret),
            "and we accept its"
        );
        assert!(!SecretHash(theirs).verify(&Secret::new("correct horse batterx")));
    }

    #[tokio::test]
    async fn hashes_made_and_checked_on_the_hashing_threads_agree() {
        let secret = Secret::new("correct horse battery");
        let hash = SecretHash::hash(&secret).await.unwrap();
        assert!(hash.check(&secret).await);
        assert!(!hash.check(&Secret::new("wrong horse battery")).await);
    }
}
