//! Machine credentials: API tokens and device secrets.
//!
//! Both are 256 random bits made by the server and shown once. What is
//! stored is a keyed BLAKE3 hash of them (a [`CredentialDigest`]), compared
//! in constant time. Argon2 is for passwords people choose; a 256-bit random
//! secret cannot be guessed, so a fast keyed hash is enough, and checking one
//! costs about a microsecond instead of tens of milliseconds of CPU.
//!
//! The key comes from `HENDU_AUTH_KEY` when it is set (the same value on
//! every replica, from a secret store: then a copy of the database alone
//! does not let anyone test guesses offline), and otherwise from a key made
//! once per installation and kept in the relational store.
//!
//! A token reads `hnd_<public id>_<secret>`: the public id (16 hex digits)
//! finds the token's row, and only the secret is hashed and compared.

use std::fmt;

use argon2::password_hash::rand_core::{OsRng, RngCore};

use crate::Storage;
use crate::error::{Result, StorageError, ValidationError};
pub use crate::model::CredentialDigest;
use crate::model::Secret;

/// The environment variable that gives the credential key.
pub const AUTH_KEY_VAR: &str = "HENDU_AUTH_KEY";
/// The name of the stored key in `installation_keys`.
const KEY_NAME: &str = "credentials";
/// Shortest `HENDU_AUTH_KEY` accepted.
const MIN_KEY_CHARS: usize = 32;
const TOKEN_PREFIX: &str = "hnd_";

/// `N` bytes from the operating system's random source (nonces, holders).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// `n` bytes from the operating system's random source, as lowercase hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new device secret: 256 random bits, 64 hex digits.
pub fn new_device_secret() -> Secret {
    Secret::new(random_hex(32))
}

/// A new browser session's secret (or a form token): 256 random bits, 64 hex digits.
pub fn new_web_secret() -> String {
    random_hex(32)
}

/// What a credential is for; a digest made for one never matches another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ApiToken,
    DeviceSecret,
    /// A browser session's cookie (and its forms' CSRF token).
    WebSession,
}

impl Purpose {
    fn context(self) -> &'static [u8] {
        match self {
            Self::ApiToken => b"hendu api token v1\0",
            Self::DeviceSecret => b"hendu device secret v1\0",
            Self::WebSession => b"hendu web session v1\0",
        }
    }
}

/// The key credentials are hashed with.
#[derive(Clone)]
pub struct AuthKey([u8; 32]);

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(***)")
    }
}

impl AuthKey {
    /// The key from `HENDU_AUTH_KEY`, or the installation's stored key
    /// (made on first use).
    ///
    /// # Errors
    /// A `HENDU_AUTH_KEY` shorter than 32 characters, or the store failing.
    pub async fn load(storage: &Storage) -> Result<Self> {
        match std::env::var(AUTH_KEY_VAR) {
            Ok(v) if !v.trim().is_empty() => Self::from_phrase(v.trim()),
            _ => {
                let fresh = random_hex(32);
                let stored = storage
                    .relational
                    .installation_key(KEY_NAME, &fresh)
                    .await?;
                parse_hex32(&stored)
                    .map(Self)
                    .ok_or_else(|| StorageError::corrupt("the stored credential key"))
            }
        }
    }

    /// A key derived from a long phrase (`HENDU_AUTH_KEY`).
    ///
    /// # Errors
    /// [`ValidationError::TooShort`] under 32 characters.
    pub fn from_phrase(phrase: &str) -> Result<Self> {
        if phrase.chars().count() < MIN_KEY_CHARS {
            return Err(ValidationError::TooShort {
                field: AUTH_KEY_VAR,
                min: MIN_KEY_CHARS,
            }
            .into());
        }
        Ok(Self(blake3::derive_key(
            "hendu 2026-12 credential key",
            phrase.as_bytes(),
        )))
    }

    /// A key for another use (signing the TCP protocol's tickets), derived
    /// from this one: the same on every replica, never the key itself.
    pub fn derive(&self, context: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"hendu derived key\0");
        hasher.update(context.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The keyed hash of `secret` for `purpose`.
    pub fn digest(&self, purpose: Purpose, secret: &str) -> CredentialDigest {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(purpose.context());
        hasher.update(secret.as_bytes());
        CredentialDigest::from_hash(hasher.finalize())
    }

    /// Whether `secret` is the one `expected` was made from, in constant
    /// time. With `expected` absent (no such device, no such token) the same
    /// work is done and the answer is false, so a refusal takes the same
    /// time whatever its reason.
    pub fn verify(
        &self,
        purpose: Purpose,
        secret: &str,
        expected: Option<&CredentialDigest>,
    ) -> bool {
        let presented = self.digest(purpose, secret);
        let decoy = CredentialDigest::from_hash(blake3::Hash::from_bytes([0xa5; 32]));
        // `blake3::Hash` compares in constant time.
        let same = presented.hash() == expected.unwrap_or(&decoy).hash();
        same && expected.is_some()
    }
}

/// A new API token: what the user is shown once, and what is stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// `hnd_<public id>_<secret>`.
    pub token: Secret,
    pub public_id: String,
    pub digest: CredentialDigest,
}

/// Makes a token.
pub fn issue_token(key: &AuthKey) -> IssuedToken {
    let public_id = random_hex(8);
    let secret = random_hex(32);
    IssuedToken {
        token: Secret::new(format!("{TOKEN_PREFIX}{public_id}_{secret}")),
        digest: key.digest(Purpose::ApiToken, &secret),
        public_id,
    }
}

/// A presented token's public id and secret, if it has the token's shape.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (public_id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(public_id, 16) && hexish(secret, 64)).then_some((public_id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_their_digest_only() {
        let key = AuthKey::from_phrase("a long phrase that is the key of this test").unwrap();
        let issued = issue_token(&key);
        let (public_id, secret) = split_token(issued.token.expose()).unwrap();
        assert_eq!(public_id, issued.public_id);
        assert!(key.verify(Purpose::ApiToken, secret, Some(&issued.digest)));
        assert!(!key.verify(Purpose::DeviceSecret, secret, Some(&issued.digest)));
        assert!(!key.verify(Purpose::ApiToken, secret, None));
        let other = AuthKey::from_phrase("another long phrase, another key entirely").unwrap();
        assert!(!other.verify(Purpose::ApiToken, secret, Some(&issued.digest)));
        let stored = CredentialDigest::parse(&issued.digest.to_hex()).unwrap();
        assert_eq!(stored, issued.digest);
        assert!(CredentialDigest::parse("$argon2id$v=19$m=19456,t=2,p=1$abc").is_none());
        assert!(split_token("hnd_zz_00").is_none());
        assert!(split_token("Bearer something").is_none());
        assert!(AuthKey::from_phrase("short").is_err());
        assert_ne!(new_device_secret(), new_device_secret());
        assert_eq!(new_device_secret().expose().len(), 64);
    }
}
