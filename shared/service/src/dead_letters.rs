//! The administrators' view of a queue's dead letters: entries delivered
//! too often without being acknowledged, or refused by their consumer as
//! ones that can never succeed. Each consumer service serves its own queue's:
//!
//! - `GET /v1/dead-letters/{queue}[?after=ID&limit=N]`: oldest first,
//!   `{"dead_letters": [...], "next_after"}`;
//! - `POST /v1/dead-letters/{queue}/{id}/requeue`: back onto the queue as a
//!   fresh entry (after the cause was fixed);
//! - `DELETE /v1/dead-letters/{queue}/{id}`: dropped for good.

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use hendu_storage::queue::{DeadCounts, DeadReason};
use hendu_storage::{Queue, Storage};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Auth, Principal};
use crate::error::ApiError;

#[derive(Debug, Clone)]
struct DeadState {
    storage: Storage,
    auth: Auth,
    queue: Queue,
}

impl FromRef<DeadState> for Auth {
    fn from_ref(state: &DeadState) -> Self {
        state.auth.clone()
    }
}

/// The dead-letter routes of `queue`.
pub fn router(queue: Queue, storage: Storage, auth: Auth) -> Router {
    let base = format!("/v1/dead-letters/{}", queue.name());
    Router::new()
        .route(&base, get(list))
        .route(&format!("{base}/{{id}}/requeue"), post(requeue))
        .route(&format!("{base}/{{id}}"), delete(discard))
        .with_state(DeadState {
            storage,
            auth,
            queue,
        })
}

const WHAT: &str = "manage dead letters";

#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn list(
    State(state): State<DeadState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin(WHAT)?;
    if page.limit == 0 || page.limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "limit must be within 1..=1000",
        ));
    }
    let letters = state
        .storage
        .queue
        .dead_letters(state.queue, page.after.as_deref(), page.limit)
        .await?;
    let next = (letters.len() == page.limit)
        .then(|| letters.last().map(|l| l.id.clone()))
        .flatten();
    Ok(Json(json!({ "dead_letters": letters, "next_after": next })))
}

async fn requeue(
    State(state): State<DeadState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin(WHAT)?;
    if !state
        .storage
        .queue
        .requeue_dead_letter(state.queue, &id)
        .await?
    {
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    tracing::info!(queue = state.queue.name(), dead_letter = %id, by = principal.user.id, "dead letter requeued");
    Ok(Json(json!({ "requeued": id })))
}

async fn discard(
    State(state): State<DeadState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin(WHAT)?;
    if !state
        .storage
        .queue
        .discard_dead_letter(state.queue, &id)
        .await?
    {
        return Err(ApiError::not_found(format!("no dead letter {id}")));
    }
    tracing::info!(queue = state.queue.name(), dead_letter = %id, by = principal.user.id, "dead letter discarded");
    Ok(StatusCode::NO_CONTENT)
}

/// A counter family by `reason` of the entries a process moved to `queue`'s
/// dead letters, read from the store's own counts (the store moves entries
/// delivered too often by itself, so no consumer counts them).
#[derive(Debug)]
pub struct DeadLettered {
    pub counts: DeadCounts,
    pub queue: Queue,
}

impl EncodeMetric for DeadLettered {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for reason in DeadReason::ALL {
            let labels = [("reason", reason.label())];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&self.counts.get(self.queue, reason), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
