//! The v2 login: challenge and response on the device secret, which never
//! crosses the wire (the SCRAM construction of RFC 5802, with HMAC-SHA-256
//! and without the salt and iterations a human password would need: a
//! device secret is 256 random bits).
//!
//! The secret is the 64 hex digits an administrator received when the
//! device was registered; its ASCII characters are the HMAC key.
//!
//! ```text
//! ClientKey   = HMAC-SHA-256(secret, "hendu sensor v2 client key")
//! StoredKey   = SHA-256(ClientKey)                 the server keeps only this
//! AuthMessage = "hendu v2 login" || u8 len(imei) || imei || server_nonce(16) || client_nonce(16)
//! Signature   = HMAC-SHA-256(StoredKey, AuthMessage)
//! Proof       = ClientKey XOR Signature            what the device sends
//! ```
//!
//! The server computes `Signature` from its `StoredKey`, recovers
//! `ClientKey = Proof XOR Signature`, and accepts when `SHA-256(ClientKey)`
//! is `StoredKey` (compared in constant time). A captured exchange does not
//! help with the next (the server nonce is new each time), and a copy of
//! the server's store does not let anyone log in as the device (it holds
//! `StoredKey`, not `ClientKey`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const NONCE_LEN: usize = 16;
pub const KEY_LEN: usize = 32;

const CLIENT_KEY_LABEL: &[u8] = b"hendu sensor v2 client key";
const AUTH_LABEL: &[u8] = b"hendu v2 login";

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `ClientKey`: what the device derives from its secret.
pub fn client_key(secret: &str) -> [u8; KEY_LEN] {
    hmac(secret.as_bytes(), &[CLIENT_KEY_LABEL])
}

/// `StoredKey`: what the server keeps for a device (its login verifier).
pub fn stored_key(secret: &str) -> [u8; KEY_LEN] {
    Sha256::digest(client_key(secret)).into()
}

fn signature(
    stored_key: &[u8; KEY_LEN],
    imei: &str,
    server_nonce: &[u8; NONCE_LEN],
    client_nonce: &[u8; NONCE_LEN],
) -> [u8; KEY_LEN] {
    // An IMEI is 15 digits; a longer string is cut, never a panic.
    let imei = &imei.as_bytes()[..imei.len().min(255)];
    hmac(
        stored_key,
        &[
            AUTH_LABEL,
            &[imei.len() as u8],
            imei,
            server_nonce,
            client_nonce,
        ],
    )
}

/// The device's proof for one challenge.
pub fn proof(
    secret: &str,
    imei: &str,
    server_nonce: &[u8; NONCE_LEN],
    client_nonce: &[u8; NONCE_LEN],
) -> [u8; KEY_LEN] {
    let client = client_key(secret);
    let sig = signature(&stored_key(secret), imei, server_nonce, client_nonce);
    std::array::from_fn(|i| client[i] ^ sig[i])
}

/// Whether `proof` comes from the secret whose `StoredKey` is `stored`, in
/// constant time. With `stored` absent (no such device) the same work is
/// done against a decoy and the answer is false.
pub fn verify(
    stored: Option<&[u8; KEY_LEN]>,
    imei: &str,
    server_nonce: &[u8; NONCE_LEN],
    client_nonce: &[u8; NONCE_LEN],
    proof: &[u8; KEY_LEN],
) -> bool {
    let decoy = [0x5a; KEY_LEN];
    let key = stored.unwrap_or(&decoy);
    let sig = signature(key, imei, server_nonce, client_nonce);
    let client: [u8; KEY_LEN] = std::array::from_fn(|i| proof[i] ^ sig[i]);
    let recovered: [u8; KEY_LEN] = Sha256::digest(client).into();
    bool::from(recovered.ct_eq(key)) && stored.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8c1f0e3a9b2d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";
    const IMEI: &str = "490154203237518";

    #[test]
    fn only_the_secret_proves_the_device() {
        let (sn, cn) = ([1u8; 16], [2u8; 16]);
        let stored = stored_key(SECRET);
        let p = proof(SECRET, IMEI, &sn, &cn);
        assert!(verify(Some(&stored), IMEI, &sn, &cn, &p));
        // Another secret, another device, another challenge, no device.
        let other = SECRET.replace('8', "9");
        assert!(!verify(
            Some(&stored),
            IMEI,
            &sn,
            &cn,
            &proof(&other, IMEI, &sn, &cn)
        ));
        assert!(!verify(Some(&stored), "356938035643809", &sn, &cn, &p));
        assert!(!verify(Some(&stored), IMEI, &[3; 16], &cn, &p));
        assert!(!verify(Some(&stored), IMEI, &sn, &[3; 16], &p));
        assert!(!verify(None, IMEI, &sn, &cn, &p));
        // The verifier alone does not make a proof.
        let forged: [u8; 32] = std::array::from_fn(|i| stored[i] ^ p[i]);
        assert!(!verify(Some(&stored), IMEI, &sn, &cn, &forged));
    }
}
