//! What the two SQL stores share: how a retried insert is told from a clash.

use crate::error::{Result, StorageError};
use crate::model::{Device, NewDevice, NewRadio, NewUser, Radio, Secret, SecretHash, User};
use crate::repo::Inserted;

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// argon2id is deliberately slow: hash off the async runtime's threads.
pub(crate) async fn hash_secret(secret: &Secret) -> Result<SecretHash> {
    let secret = secret.clone();
    tokio::task::spawn_blocking(move || SecretHash::of(&secret))
        .await
        .map_err(|e| StorageError::Hash(e.to_string()))?
}

async fn verify_secret(hash: &SecretHash, secret: &Secret) -> bool {
    let (hash, secret) = (hash.clone(), secret.clone());
    tokio::task::spawn_blocking(move || hash.verify(&secret))
        .await
        .unwrap_or(false)
}

/// A radio whose name was taken: the same radio again (a retry) or a clash.
pub(crate) fn same_radio(found: Radio, new: &NewRadio, created: bool) -> Result<Inserted<Radio>> {
    if created || (found.stream_url == new.stream_url && found.location == new.location) {
        Ok(Inserted {
            record: found,
            created,
        })
    } else {
        Err(StorageError::Conflict(format!(
            "a radio named {:?} already exists with another stream",
            new.name
        )))
    }
}

/// A device whose IMEI was taken: the same registration again (same name and
/// secret: a retry) or a clash.
pub(crate) async fn same_device(found: Device, new: &NewDevice, created: bool) -> Result<Device> {
    if created || (found.name == new.name && verify_secret(&found.secret_hash, &new.secret).await) {
        Ok(found)
    } else {
        Err(StorageError::Conflict(format!(
            "device {} is already registered",
            new.imei
        )))
    }
}

/// A user whose e-mail was taken: the same sign-up again or a clash.
pub(crate) async fn same_user(found: User, new: &NewUser, created: bool) -> Result<User> {
    if created
        || (found.display_name == new.display_name
            && found.role == new.role
            && verify_secret(&found.password_hash, &new.password).await)
    {
        Ok(found)
    } else {
        Err(StorageError::Conflict(format!(
            "a user with e-mail {} already exists",
            new.email
        )))
    }
}
