//! New plays pushed to open pages.
//!
//! One [`Hub`] per replica subscribes to the event bus. For each recognised
//! play it reads the play once from the store and hands it to every open
//! page of that replica, which shows it if its viewer may see it (the
//! queries' own rule, [`PlayScope::admits`]). Events are fire and forget, so
//! a page never relies on them alone: it connects with the last play it
//! shows (`/live?after=<id>`), first gets every play it may see recorded
//! since (from the store), and then the live ones; after a reconnect it
//! catches up the same way, and a page that fell behind the hub catches up
//! from the store too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hendu_service::Heartbeat;
use hendu_storage::queries::{PlayFilter, PlayOrder, PlayPage, PlayRow, PlayScope};
use hendu_storage::{Event, Storage};
use serde::Deserialize;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::Web;
use crate::view::{View, Viewer, length};

/// The hub's allowance between heartbeats.
pub const ALLOWANCE: Duration = Duration::from_secs(60);
/// Plays the hub holds for pages that are slow to take them.
const BACKLOG: usize = 1024;
/// Most plays one catch-up sends (a page that was away longer reloads).
const CATCH_UP: u32 = 200;

/// The replica's open pages and the plays for them.
#[derive(Debug, Clone)]
pub struct Hub {
    plays: broadcast::Sender<Arc<PlayRow>>,
    sockets: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Hub {
    pub fn new(max_sockets: usize) -> Self {
        Self {
            plays: broadcast::channel(BACKLOG).0,
            sockets: Arc::new(Semaphore::new(max_sockets.max(1))),
            stop: CancellationToken::new(),
        }
    }

    /// Open pages now.
    pub fn open(&self) -> usize {
        self.plays.receiver_count()
    }

    /// Follows the event bus until `stop`; then closes every page.
    pub async fn run(self, storage: Storage, beat: Heartbeat, stop: CancellationToken) {
        let _closes = self.stop.clone().drop_guard();
        let mut tick = tokio::time::interval(ALLOWANCE / 4);
        'subscribe: while !stop.is_cancelled() {
            let mut events = match storage.events.subscribe().await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the events; live pages catch up from the store");
                    beat.beat();
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            };
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => break 'subscribe,
                    _ = tick.tick() => { beat.beat(); continue; }
                    event = events.next() => event,
                };
                let Some(event) = event else {
                    tracing::warn!("the event subscription ended; subscribing again");
                    continue 'subscribe;
                };
                let Event::PlayRecognised { play_id, .. } = event else {
                    continue;
                };
                if self.plays.receiver_count() == 0 {
                    continue;
                }
                let mut filter = PlayFilter::scoped(PlayScope::Everything);
                filter.play = Some(play_id);
                match storage.relational.play_rows(&filter, one()).await {
                    Ok(rows) => {
                        for row in rows {
                            let _ = self.plays.send(Arc::new(row));
                        }
                    }
                    // The pages catch up from the store when they next connect.
                    Err(e) => tracing::warn!(error = %e, play_id, "cannot read a recognised play"),
                }
            }
        }
    }
}

fn one() -> PlayPage {
    PlayPage {
        order: PlayOrder::Recorded,
        descending: false,
        offset: 0,
        limit: 1,
    }
}

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// The last play the page shows.
    #[serde(default)]
    after: i64,
}

/// `GET /live?after=<play id>`: the WebSocket of an open page.
pub async fn socket(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<LiveQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = web.live.sockets.clone().try_acquire_owned() else {
        return hendu_service::error::busy(Duration::from_secs(5)).into_response();
    };
    let ping = web.config.ping_every;
    upgrade
        .max_message_size(4096)
        .on_upgrade(move |ws| async move {
            let _permit = permit;
            follow(ws, web, view, viewer, q.after, ping).await;
        })
}

/// A play as the page shows it.
pub fn message(view: View, r: &PlayRow) -> String {
    serde_json::json!({
        "id": r.play.id,
        "url": format!("/plays/{}", r.play.id),
        "start": view.when(r.play.started_at),
        "track": match &r.artist {
            Some(a) => format!("{} · {a}", r.title),
            None => r.title.clone(),
        },
        "source": r.source_name,
        "location": r.play.location.as_deref().unwrap_or(""),
        "played": length((r.play.ended_at - r.play.started_at).as_seconds_f64()),
    })
    .to_string()
}

async fn follow(
    mut ws: WebSocket,
    web: Web,
    view: View,
    viewer: Viewer,
    after: i64,
    ping: Duration,
) {
    let scope = viewer.scope();
    // Subscribed before catching up, so nothing falls between the two.
    let mut plays = web.live.plays.subscribe();
    let mut last = after;
    if catch_up(&mut ws, &web, view, scope, &mut last)
        .await
        .is_err()
    {
        return;
    }
    let mut pinger = tokio::time::interval(ping);
    pinger.tick().await;
    loop {
        tokio::select! {
            () = web.live.stop.cancelled() => {
                let _ = ws.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: axum::extract::ws::close_code::AWAY,
                    reason: "the service is restarting".into(),
                }))).await;
                return;
            }
            _ = pinger.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = ws.recv() => match incoming {
                // A page only listens; anything it sends is ignored.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            play = plays.recv() => match play {
                Ok(row) => {
                    if row.play.id > last && scope.admits(&row) {
                        last = row.play.id;
                        if ws.send(Message::Text(message(view, &row).into())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if catch_up(&mut ws, &web, view, scope, &mut last).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Sends the plays in `scope` recorded after `last`, oldest first.
async fn catch_up(
    ws: &mut WebSocket,
    web: &Web,
    view: View,
    scope: PlayScope,
    last: &mut i64,
) -> Result<(), ()> {
    let mut filter = PlayFilter::scoped(scope);
    filter.after = Some(*last);
    let page = PlayPage {
        order: PlayOrder::Recorded,
        descending: false,
        offset: 0,
        limit: CATCH_UP,
    };
    let rows = match web.storage.relational.play_rows(&filter, page).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch a live page up");
            return Ok(());
        }
    };
    for row in rows {
        *last = row.play.id;
        ws.send(Message::Text(message(view, &row).into()))
            .await
            .map_err(|_| ())?;
    }
    Ok(())
}
