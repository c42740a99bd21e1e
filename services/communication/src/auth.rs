//! Device secrets and administrators' passwords.
//!
//! Both are stored as argon2id hashes, which take tens of milliseconds of
//! CPU to check, on purpose. A device uploads a sample every 30 s, so a
//! secret once verified against a stored hash is remembered (as a BLAKE3
//! digest, never in clear) and matched against that same hash without
//! argon2 again. Changing a secret changes the stored hash, which forgets
//! the old one.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use hendu_service::ApiError;
use hendu_storage::Storage;
use hendu_storage::model::{Role, Secret, SecretHash, User};

/// Remembered verifications beyond this many are forgotten all at once.
const REMEMBERED: usize = 100_000;

#[derive(Debug, Default)]
pub struct Verifier {
    verified: Mutex<HashMap<String, blake3::Hash>>,
}

impl Verifier {
    /// True when `secret` is the one `hash` was made from.
    pub async fn verify(&self, hash: &SecretHash, secret: &Secret) -> bool {
        let digest = blake3::hash(secret.expose().as_bytes());
        // `blake3::Hash` compares in constant time.
        if self.remembered(hash).is_some_and(|known| known == digest) {
            return true;
        }
        let ok = hash.check(secret).await;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= REMEMBERED {
                verified.clear();
            }
            verified.insert(hash.as_str().to_owned(), digest);
        }
        ok
    }

    fn remembered(&self, hash: &SecretHash) -> Option<blake3::Hash> {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash.as_str())
            .copied()
    }
}

pub fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The administrator named by the request's `Authorization: Basic` header.
///
/// # Errors
/// 401 without valid credentials, 403 for a user who is not an administrator.
pub async fn admin(
    storage: &Storage,
    verifier: &Verifier,
    headers: &HeaderMap,
) -> Result<User, ApiError> {
    let wrong = || unauthorized("unauthorized", "wrong e-mail or password");
    let encoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(|| {
            unauthorized(
                "missing_credentials",
                "this API needs an administrator's e-mail and password (HTTP Basic)",
            )
        })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(wrong)?;
    let (email, password) = decoded.split_once(':').ok_or_else(wrong)?;
    let user = storage
        .relational
        .user_by_email(&email.trim().to_lowercase())
        .await?
        .ok_or_else(wrong)?;
    if !verifier
        .verify(&user.password_hash, &Secret::new(password))
        .await
    {
        return Err(wrong());
    }
    if user.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only administrators may manage devices",
        ));
    }
    Ok(user)
}
