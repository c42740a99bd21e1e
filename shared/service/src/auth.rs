//! Who is asking: API tokens for people's programs and for machines, HTTP
//! Basic with e-mail and password only to obtain a token, device secrets
//! for sensors; and the limits on failed attempts.
//!
//! Every refusal of a credential takes the same path whatever its reason
//! (unknown token, wrong secret, revoked, user disabled), so its timing
//! tells nothing. Failed attempts are counted per account (e-mail, device:
//! [`crate::limits::MAX_FAILURES`] a minute) and per client address
//! ([`ADDRESS_FAILURES`] a minute); past a limit the answer is 429 with
//! `Retry-After`, before any password or device secret is checked. Tokens
//! are counted per address only, and a valid token is never refused for
//! its address's failures.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use hendu_storage::Storage;
use hendu_storage::credentials::{AuthKey, Purpose, split_token};
use hendu_storage::model::{Device, Imei, Role, Secret, User};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::limits::FailureLimiter;

/// Failed attempts per client address and window before it is refused.
pub const ADDRESS_FAILURES: u32 = 30;
/// How often a token's last-use time is written (at most).
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Password checks (argon2, tens of milliseconds each) waiting at once; more
/// are answered 503 `busy` rather than queued without bound.
const PASSWORD_CHECKS_WAITING: usize = 8;

/// The caller of a request, proven by its token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The role the token acts with.
    pub role: Role,
    pub token_id: i64,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// # Errors
    /// 403 `forbidden` unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(forbidden(what))
        }
    }

    /// # Errors
    /// 403 `forbidden` unless the caller is an administrator.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        self.require(&[Role::Admin], what)
    }
}

pub fn forbidden(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("your role may not {what}"),
    )
}

pub fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Checks credentials for every route of a service.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    key: AuthKey,
    /// Failures per account (a device, an e-mail).
    failures: FailureLimiter,
    /// Failures per client address: higher, since many sensors at a venue
    /// or many people behind one proxy share an address.
    address_failures: FailureLimiter,
    touched: Mutex<std::collections::HashMap<i64, Instant>>,
    password_checks: tokio::sync::Semaphore,
}

impl Auth {
    pub fn new(storage: Storage, key: AuthKey) -> Self {
        Self {
            inner: Arc::new(Inner {
                storage,
                key,
                failures: FailureLimiter::default(),
                address_failures: FailureLimiter::new(ADDRESS_FAILURES, crate::limits::WINDOW),
                touched: Mutex::new(std::collections::HashMap::new()),
                password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS_WAITING),
            }),
        }
    }

    /// With the key of `HENDU_AUTH_KEY` or of the installation.
    ///
    /// # Errors
    /// A bad `HENDU_AUTH_KEY`, or the store failing.
    pub async fn load(storage: &Storage) -> Result<Self, hendu_storage::StorageError> {
        Ok(Self::new(storage.clone(), AuthKey::load(storage).await?))
    }

    pub fn key(&self) -> &AuthKey {
        &self.inner.key
    }

    fn limiter(&self, key: &str) -> &FailureLimiter {
        if key.contains("addr:") {
            &self.inner.address_failures
        } else {
            &self.inner.failures
        }
    }

    fn limited(&self, keys: &[String]) -> Result<(), ApiError> {
        match keys
            .iter()
            .filter_map(|k| self.limiter(k).blocked_for(k))
            .max()
        {
            Some(wait) => Err(too_many(wait)),
            None => Ok(()),
        }
    }

    fn failed(&self, keys: &[String]) {
        for k in keys {
            self.limiter(k).fail(k);
        }
    }

    /// The caller named by `Authorization: Bearer <token>`.
    ///
    /// # Errors
    /// 401 without a token or with one that is not valid (unknown, revoked,
    /// its user disabled or changed role: all the same answer), 429 after
    /// too many failures from this address, 503 when the store is down.
    pub async fn bearer(&self, headers: &HeaderMap, client: IpAddr) -> Result<Principal, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized(
                    "missing_credentials",
                    "send an API token: Authorization: Bearer <token>",
                )
            })?;
        // A token is 256 random bits: failures are limited to spare the
        // store, and a valid token passes even from an address over its
        // limit (people behind one proxy share an address).
        let by_address = [format!("token-addr:{client}")];
        let wrong = || match self.limited(&by_address) {
            Err(too_many) => too_many,
            Ok(()) => unauthorized("unauthorized", "the token is not valid"),
        };
        let (public_id, secret) = split_token(presented).unwrap_or(("", ""));
        let token = if public_id.is_empty() {
            None
        } else {
            self.inner.storage.relational.token(public_id).await?
        };
        let user = match &token {
            Some(t) => self.inner.storage.relational.user(t.user_id).await?,
            None => None,
        };
        let digest = token.as_ref().and_then(|t| t.digest.as_ref());
        let matches = self.inner.key.verify(Purpose::ApiToken, secret, digest);
        let (Some(token), Some(user)) = (token, user) else {
            let refusal = wrong();
            self.failed(&by_address);
            return Err(refusal);
        };
        if !matches || token.revoked_at.is_some() || user.disabled || user.role != token.scope {
            let refusal = wrong();
            self.failed(&by_address);
            return Err(refusal);
        }
        self.touch(token.id).await;
        Ok(Principal {
            role: token.scope,
            token_id: token.id,
            user,
        })
    }

    /// Writes a token's last use, at most once a minute per token and replica.
    async fn touch(&self, id: i64) {
        let due = {
            let mut touched = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched.len() > 100_000 {
                touched.clear();
            }
            let now = Instant::now();
            match touched.get(&id) {
                Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
                _ => {
                    touched.insert(id, now);
                    true
                }
            }
        };
        if due
            && let Err(e) = self
                .inner
                .storage
                .relational
                .touch_token(id, OffsetDateTime::now_utc())
                .await
        {
            tracing::warn!(error = %e, token = id, "cannot record a token's use");
        }
    }

    /// The user named by `Authorization: Basic` (e-mail and password): only
    /// for obtaining a token.
    ///
    /// # Errors
    /// 401 for anything but a valid, enabled user's password; 429 after too
    /// many failures for the address or the e-mail; 503 `busy` when too many
    /// password checks wait.
    pub async fn password(&self, headers: &HeaderMap, client: IpAddr) -> Result<User, ApiError> {
        let encoded = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .ok_or_else(|| {
                unauthorized(
                    "missing_credentials",
                    "send an API token (Bearer), or your e-mail and password (Basic) to get one",
                )
            })?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let (email, password) = decoded.split_once(':').unwrap_or(("", ""));
        self.sign_in(email, password, client).await
    }

    /// The user with this e-mail and password (the web service's sign-in
    /// form, and [`Self::password`]).
    ///
    /// # Errors
    /// As [`Self::password`].
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<User, ApiError> {
        let wrong = || unauthorized("unauthorized", "wrong e-mail or password");
        let email = email.trim().to_lowercase();
        let keys = [format!("login-addr:{client}"), format!("login:{email}")];
        self.limited(&keys)?;
        let Ok(_permit) = self.inner.password_checks.try_acquire() else {
            return Err(crate::error::busy(Duration::from_secs(1)));
        };
        let user = if email.is_empty() {
            None
        } else {
            self.inner.storage.relational.user_by_email(&email).await?
        };
        // An unknown e-mail costs an argon2 hash of the same parameters, so it
        // is not refused faster than a wrong password.
        let password = Secret::new(password);
        let ok = match &user {
            Some(u) => u.password_hash.check(&password).await,
            None => {
                let _ = hendu_storage::model::SecretHash::hash(&password).await;
                false
            }
        };
        match user {
            Some(user) if ok && !user.disabled => Ok(user),
            _ => {
                self.failed(&keys);
                Err(wrong())
            }
        }
    }

    /// The device `imei`, if `secret` is its secret.
    ///
    /// # Errors
    /// 401 `unauthorized` for an unknown device or a wrong secret (the same
    /// answer, in the same time), 403 `device_disabled` after a correct
    /// secret, 429 after too many failures for the device or the address.
    pub async fn device(
        &self,
        imei: &Imei,
        secret: &str,
        client: IpAddr,
    ) -> Result<Device, ApiError> {
        let key = &self.inner.key;
        self.device_proven(imei, client, |device| {
            let digest = device.and_then(|d| d.secret_digest.as_ref());
            key.verify(Purpose::DeviceSecret, secret, digest)
        })
        .await
    }

    /// The device `imei`, if `proves` accepts what it presented (a proof
    /// of the TCP protocol's login, checked against the device's stored
    /// verifier). `proves` is called with `None` for an unknown device and
    /// must then do the same work and answer false, so that a refusal takes
    /// the same time whatever its reason. Failures count as
    /// [`Self::device`]'s do.
    ///
    /// # Errors
    /// As [`Self::device`].
    pub async fn device_proven(
        &self,
        imei: &Imei,
        client: IpAddr,
        proves: impl FnOnce(Option<&Device>) -> bool,
    ) -> Result<Device, ApiError> {
        let keys = [
            format!("device-addr:{client}"),
            format!("device:{}", imei.as_str()),
        ];
        self.limited(&keys)?;
        let device = self.inner.storage.relational.device_by_imei(imei).await?;
        let ok = proves(device.as_ref());
        match device {
            Some(d) if ok => {
                if d.enabled {
                    Ok(d)
                } else {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "device_disabled",
                        "this device is disabled; an administrator can enable it",
                    ))
                }
            }
            _ => {
                self.failed(&keys);
                Err(unauthorized(
                    "unauthorized",
                    "unknown device or wrong secret",
                ))
            }
        }
    }

    /// Counts a failed device sign-in that never named a device (a
    /// malformed IMEI), against the address.
    ///
    /// # Errors
    /// 429 when the address is over its limit.
    pub fn device_address_failed(&self, client: IpAddr) -> Result<(), ApiError> {
        let keys = [format!("device-addr:{client}")];
        self.limited(&keys)?;
        self.failed(&keys);
        Ok(())
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        "too many failed attempts; wait before trying again",
    )
    .retry_after(wait)
}

/// The client's address (the peer of the connection).
pub fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

impl<S> FromRequestParts<S> for Principal
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_ref(state);
        auth.bearer(&parts.headers, client_addr(parts)).await
    }
}
