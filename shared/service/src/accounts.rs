//! The accounts API: users (administrators manage them) and API tokens
//! (an administrator makes them for anyone, a user for themselves).
//!
//! - `POST /v1/tokens` `{"name", "user_id"?}` with a token (Bearer), or with
//!   the user's e-mail and password (HTTP Basic: how a person gets a first
//!   token): `201 {"token": "hnd_...", ...}`; the token is shown only here.
//! - `GET /v1/tokens`: the caller's tokens (an administrator's: everyone's,
//!   or one user's with `?user_id=`); never a secret.
//! - `DELETE /v1/tokens/{id}`: revokes (the caller's own; an administrator any).
//! - `POST /v1/users` `{"email", "display_name", "role", "password"}`,
//!   `GET /v1/users`, `PATCH /v1/users/{id}` `{"disabled": bool}`: administrators.

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post};
use axum::{Json, Router};
use hendu_storage::Storage;
use hendu_storage::credentials::issue_token;
use hendu_storage::model::{ApiToken, NewToken, NewUser, Role, Secret, User, UserId};
use serde::{Deserialize, Serialize};

use crate::auth::{Auth, Principal, client_addr, forbidden};
use crate::error::ApiError;

/// What the accounts routes need.
#[derive(Debug, Clone)]
pub struct AccountsState {
    pub storage: Storage,
    pub auth: Auth,
}

impl FromRef<AccountsState> for Auth {
    fn from_ref(state: &AccountsState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: AccountsState) -> Router {
    Router::new()
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/users/{id}", patch(change_user))
        .with_state(state)
}

/// The accounts API's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(create_token, list_tokens, revoke_token, create_user, list_users, change_user),
    components(schemas(TokenRequest, TokenIssued, TokenList, ApiToken, Role, UserRequest, UserView, UserPage, UserChange)),
    tags((name = "accounts", description = "Users and API tokens"))
)]
pub struct Api;

/// A token, made: the secret is shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TokenIssued {
    /// `hnd_<public id>_<secret>`: send as `Authorization: Bearer <token>`.
    token: String,
    details: ApiToken,
}

/// Tokens, never their secrets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TokenList {
    tokens: Vec<ApiToken>,
}

/// A page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UserPage {
    users: Vec<UserView>,
    /// The `after` of the next page, if there may be one.
    next_after: Option<UserId>,
}

/// A user as the API shows them (never a password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            disabled: u.disabled,
        }
    }
}

/// Reads a JSON body (its size is bounded by the route's body limit).
///
/// # Errors
/// 400 `invalid_json` naming what is wrong.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid: {e}")))
}

/// A field of a PATCH: absent (keep), `null` (clear) or a value.
#[derive(Debug, Default)]
pub enum Field<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Field::Clear,
            Some(v) => Field::Set(v),
        })
    }
}

impl<T: Clone> Field<T> {
    pub fn apply(&self, current: Option<T>) -> Option<T> {
        match self {
            Field::Keep => current,
            Field::Clear => None,
            Field::Set(v) => Some(v.clone()),
        }
    }
}

/// Checks that `owner`, if any, may own a source (a station or a device):
/// an operator (or an administrator).
///
/// # Errors
/// 422 `invalid_owner` naming why not.
pub async fn operator(storage: &Storage, owner: Option<UserId>) -> Result<(), ApiError> {
    let Some(id) = owner else {
        return Ok(());
    };
    match storage.relational.user(id).await? {
        Some(u) if u.role == Role::Operator || u.role == Role::Admin => Ok(()),
        Some(_) => Err(ApiError::unprocessable(
            "invalid_owner",
            format!("user {id} is not an operator; a source belongs to an operator"),
        )),
        None => Err(ApiError::unprocessable(
            "invalid_owner",
            format!("there is no user {id}"),
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
    /// Administrators only: make the token for this user.
    user_id: Option<UserId>,
}

#[utoipa::path(post, path = "/v1/tokens", operation_id = "create_token", tag = "accounts", request_body = TokenRequest,
    security(("token" = []), ("password" = [])),
    responses((status = 201, description = "The token, shown only now", body = TokenIssued), (status = 400, description = "A request that cannot be read, named", body = crate::openapi::ErrorBody), (status = 401, description = "No live token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such user", body = crate::openapi::ErrorBody),
        (status = 422, description = "A name that is not valid, or a disabled user", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many failed attempts (Retry-After)", body = crate::openapi::ErrorBody)))]
async fn create_token(
    State(state): State<AccountsState>,
    parts: axum::http::request::Parts,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let client = client_addr(&parts);
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let (caller, admin) = if bearer {
        let p = state.auth.bearer(&parts.headers, client).await?;
        let admin = p.is_admin();
        (p.user, admin)
    } else {
        // E-mail and password: only for the caller's own token.
        (state.auth.password(&parts.headers, client).await?, false)
    };
    let request: TokenRequest = json_body(&body)?;
    let owner = match request.user_id {
        Some(id) if id != caller.id => {
            if !admin {
                return Err(forbidden("make tokens for other users"));
            }
            state
                .storage
                .relational
                .user(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no user has id {id}")))?
        }
        _ => caller,
    };
    if owner.disabled {
        return Err(ApiError::unprocessable(
            "user_disabled",
            "the user is disabled",
        ));
    }
    let issued = issue_token(state.auth.key());
    let new = NewToken::new(&issued.public_id, &issued.digest, &owner, &request.name)?;
    let token = state.storage.relational.add_token(&new).await?;
    tracing::info!(user = owner.id, token = token.id, "token made");
    Ok((
        StatusCode::CREATED,
        Json(TokenIssued {
            token: issued.token.expose().to_owned(),
            details: token,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct TokensQuery {
    user_id: Option<UserId>,
}

#[utoipa::path(get, path = "/v1/tokens", operation_id = "list_tokens", tag = "accounts",
    params(("user_id" = Option<i64>, Query, description = "Administrators: one user's tokens")), security(("token" = [])),
    responses((status = 200, description = "The caller's tokens (an administrator's: everyone's)", body = TokenList), (status = 401, description = "No live token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = crate::openapi::ErrorBody),))]
async fn list_tokens(
    State(state): State<AccountsState>,
    principal: Principal,
    Query(q): Query<TokensQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let whose = if principal.is_admin() {
        q.user_id
    } else {
        if q.user_id.is_some_and(|u| u != principal.user.id) {
            return Err(forbidden("list other users' tokens"));
        }
        Some(principal.user.id)
    };
    let tokens: Vec<ApiToken> = state.storage.relational.tokens(whose).await?;
    Ok(Json(TokenList { tokens }))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", operation_id = "revoke_token", tag = "accounts",
    params(("id" = i64, Path, description = "The token's id")), security(("token" = [])),
    responses((status = 204, description = "Revoked"), (status = 401, description = "No live token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such token of the caller's", body = crate::openapi::ErrorBody)))]
async fn revoke_token(
    State(state): State<AccountsState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let mine = state
        .storage
        .relational
        .tokens(if principal.is_admin() {
            None
        } else {
            Some(principal.user.id)
        })
        .await?;
    // Someone else's token is "not found" to a non-administrator: ids tell nothing.
    if !mine.iter().any(|t| t.id == id) {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    state.storage.relational.revoke_token(id).await?;
    tracing::info!(token = id, by = principal.user.id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    email: String,
    display_name: String,
    role: String,
    password: String,
}

#[utoipa::path(post, path = "/v1/users", operation_id = "create_user", tag = "accounts", request_body = UserRequest, security(("token" = [])),
    responses((status = 201, description = "Created", body = UserView), (status = 400, description = "A request that cannot be read, named", body = crate::openapi::ErrorBody), (status = 401, description = "No live token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = crate::openapi::ErrorBody),
        (status = 409, description = "A user with this e-mail exists", body = crate::openapi::ErrorBody),
        (status = 422, description = "A field that is not valid, named", body = crate::openapi::ErrorBody)))]
async fn create_user(
    State(state): State<AccountsState>,
    principal: Principal,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin("manage users")?;
    let r: UserRequest = json_body(&body)?;
    let role = Role::parse_name(&r.role)?;
    let new = NewUser::new(&r.email, &r.display_name, role, Secret::new(r.password))?;
    if state
        .storage
        .relational
        .user_by_email(&new.email)
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a user with e-mail {} exists", new.email),
        ));
    }
    let user = state.storage.relational.add_user(&new).await?;
    tracing::info!(user = user.id, role = role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(user))).into_response())
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    after: UserId,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

#[utoipa::path(get, path = "/v1/users", operation_id = "list_users", tag = "accounts",
    params(("after" = Option<i64>, Query, description = "Users after this id (default 0)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)")), security(("token" = [])),
    responses((status = 200, description = "Users (administrators)", body = UserPage), (status = 400, description = "A request that cannot be read, named", body = crate::openapi::ErrorBody), (status = 401, description = "No live token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = crate::openapi::ErrorBody),))]
async fn list_users(
    State(state): State<AccountsState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<UserPage>, ApiError> {
    principal.require_admin("manage users")?;
    if page.limit == 0 || page.limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "limit must be within 1..=1000",
        ));
    }
    let users: Vec<UserView> = state
        .storage
        .relational
        .users(page.after, page.limit)
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    let next_after = (users.len() == page.limit as usize)
        .then(|| users.last().map(|u| u.id))
        .flatten();
    Ok(Json(UserPage { users, next_after }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserChange {
    disabled: bool,
}

#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "change_user", tag = "accounts",
    params(("id" = i64, Path, description = "The user's id")), request_body = UserChange, security(("token" = [])),
    responses((status = 200, description = "The user as changed", body = UserView), (status = 400, description = "A request that cannot be read, named", body = crate::openapi::ErrorBody), (status = 401, description = "No live token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such user", body = crate::openapi::ErrorBody),
        (status = 422, description = "An administrator disabling themselves", body = crate::openapi::ErrorBody)))]
async fn change_user(
    State(state): State<AccountsState>,
    principal: Principal,
    Path(id): Path<UserId>,
    body: bytes::Bytes,
) -> Result<Json<UserView>, ApiError> {
    principal.require_admin("manage users")?;
    let change: UserChange = json_body(&body)?;
    if id == principal.user.id && change.disabled {
        return Err(ApiError::unprocessable(
            "invalid_input",
            "administrators cannot disable themselves",
        ));
    }
    if !state
        .storage
        .relational
        .set_user_disabled(id, change.disabled)
        .await?
    {
        return Err(ApiError::not_found(format!("no user has id {id}")));
    }
    tracing::info!(user = id, disabled = change.disabled, "user changed");
    let user = state
        .storage
        .relational
        .user(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user has id {id}")))?;
    Ok(Json(user.into()))
}
