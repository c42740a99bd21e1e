//! New plays pushed to open pages.
//!
//! One [`Hub`] per replica subscribes to the event bus. For each recognised
//! play it reads the play once from the store and hands it to every open
//! page of that replica, which shows it if its viewer may see it (the
//! queries' own rule, [`PlayScope::admits`]). Events are fire and forget, so
//! a page never relies on them alone: it connects with the last play it
//! shows (`/live?after=<id>`), first gets every play it may see recorded
//! since (from the store, from a little before that id: plays commit out of
//! id order, and the page shows each id once), and then the live ones;
//! after a reconnect it catches up the same way, and a page that fell
//! behind the hub catches up from the store too. A page that missed more
//! than a catch-up sends is told to reload. The session is checked again at
//! every ping: a page whose session ended (signed out, a new password, a
//! disabled user) is closed.
//!
//! Stations going down or silent, and coming back, reach the open pages of
//! administrators (every station) and of the station's operator the same
//! way, as alerts; a page without plays (the administration) opens its
//! socket for alerts alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hendu_service::Heartbeat;
use hendu_storage::model::UserId;
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
/// Plays a catch-up reads at a time.
const CATCH_UP: u32 = 200;
/// Station alerts the hub holds for pages that are slow to take them.
const ALERTS: usize = 256;

/// A station went down or silent, or came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub radio_id: i64,
    pub station: String,
    /// The station's operator, who sees its alerts besides administrators.
    pub operator: Option<UserId>,
    pub state: AlertState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Down,
    Silent,
    Back,
}

impl Alert {
    fn admits(&self, viewer: &Viewer) -> bool {
        match viewer.user.role {
            hendu_storage::model::Role::Admin => true,
            hendu_storage::model::Role::Operator => self.operator == Some(viewer.user.id),
            hendu_storage::model::Role::Musician => false,
        }
    }

    /// The alert as the page shows it, in the viewer's language.
    fn message(&self, view: View, admin: bool) -> String {
        let (state, text) = match self.state {
            AlertState::Down => ("down", view.t("is down", "está caída")),
            AlertState::Silent => (
                "silent",
                view.t("is silent (dead air)", "está en silencio (aire muerto)"),
            ),
            AlertState::Back => ("back", view.t("is back on air", "volvió al aire")),
        };
        serde_json::json!({
            "alert": {
                "radio_id": self.radio_id,
                "station": self.station,
                "state": state,
                "text": format!("{} {text}", self.station),
                "url": if admin { "/admin/stations".to_owned() } else { format!("/reports?source=radio:{}", self.radio_id) },
            }
        })
        .to_string()
    }
}

/// The replica's open pages and the plays for them.
#[derive(Debug, Clone)]
pub struct Hub {
    plays: broadcast::Sender<Arc<PlayRow>>,
    alerts: broadcast::Sender<Arc<Alert>>,
    sockets: Arc<Semaphore>,
    /// Open pages per person, and how many one person may hold.
    people: Arc<Mutex<HashMap<UserId, usize>>>,
    per_person: usize,
    stop: CancellationToken,
}

/// One person's open page, counted while it lives.
#[derive(Debug)]
struct Seat {
    people: Arc<Mutex<HashMap<UserId, usize>>>,
    user: UserId,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = people.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                people.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// At most `max_sockets` open pages on the replica, `per_person` of
    /// them one person's (a script opening pages in a loop takes no more).
    pub fn new(max_sockets: usize, per_person: usize) -> Self {
        Self {
            plays: broadcast::channel(BACKLOG).0,
            alerts: broadcast::channel(ALERTS).0,
            sockets: Arc::new(Semaphore::new(max_sockets.max(1))),
            people: Arc::default(),
            per_person: per_person.max(1),
            stop: CancellationToken::new(),
        }
    }

    /// A seat for one more of `user`'s pages, if they have fewer than allowed.
    fn seat(&self, user: UserId) -> Option<Seat> {
        let mut people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        let open = people.entry(user).or_insert(0);
        if *open >= self.per_person {
            return None;
        }
        *open += 1;
        Some(Seat {
            people: self.people.clone(),
            user,
        })
    }

    /// Open pages now (each takes alerts; those with plays, plays too).
    pub fn open(&self) -> usize {
        self.alerts.receiver_count()
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
                beat.pace().await;
                let event = tokio::select! {
                    () = stop.cancelled() => break 'subscribe,
                    _ = tick.tick() => { beat.beat(); continue; }
                    event = events.next() => event,
                };
                let Some(event) = event else {
                    tracing::warn!("the event subscription ended; subscribing again");
                    continue 'subscribe;
                };
                let (radio_id, state) = match event {
                    Event::PlayRecognised { play_id, .. } => {
                        self.recognised(&storage, play_id).await;
                        continue;
                    }
                    Event::StationDown { radio_id, .. } => (radio_id, AlertState::Down),
                    Event::StationSilent { radio_id, .. } => (radio_id, AlertState::Silent),
                    Event::StationBack { radio_id } => (radio_id, AlertState::Back),
                    _ => continue,
                };
                if self.alerts.receiver_count() == 0 {
                    continue;
                }
                match storage.relational.radio(radio_id).await {
                    Ok(Some(radio)) => {
                        let _ = self.alerts.send(Arc::new(Alert {
                            radio_id,
                            station: radio.name,
                            operator: radio.owner,
                            state,
                        }));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, radio_id, "cannot read an alert's station")
                    }
                }
            }
        }
    }

    /// Hands a recognised play to the open pages.
    async fn recognised(&self, storage: &Storage, play_id: i64) {
        if self.plays.receiver_count() == 0 {
            return;
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
    /// The last play the page shows; absent on a page without plays, which
    /// takes station alerts alone.
    after: Option<i64>,
}

/// `GET /live?after=<play id>`: the WebSocket of an open page.
pub async fn socket(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<LiveQuery>,
    upgrade: WebSocketUpgrade,
    headers: axum::http::HeaderMap,
) -> Response {
    // Browsers send the page's origin: a page of another site (which the
    // session cookie would otherwise follow) is refused.
    if !same_origin(&headers) {
        return hendu_service::auth::forbidden("open this site's live updates from another site")
            .into_response();
    }
    let Some(seat) = web.live.seat(viewer.user.id) else {
        return hendu_service::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_pages",
            "too many of your pages are open live; close some",
        )
        .retry_after(Duration::from_secs(30))
        .into_response();
    };
    let Ok(permit) = web.live.sockets.clone().try_acquire_owned() else {
        return hendu_service::error::busy(Duration::from_secs(5)).into_response();
    };
    let ping = web.config.ping_every;
    // A page sends nothing but control frames, and is sent small messages:
    // small buffers (the defaults of 128 KiB each way cost that per page).
    upgrade
        .max_message_size(4096)
        .max_frame_size(4096)
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .on_upgrade(move |ws| async move {
            let _held = (permit, seat);
            follow(ws, web, view, viewer, q.after, ping).await;
        })
}

/// Whether the request's `Origin`, if it has one, is this site (its `Host`).
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
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

/// Plays before the page's last one that a catch-up sends again: ids are
/// taken when a play is written, but plays are committed (and announced)
/// in any order across sources and filter replicas, so a smaller id can
/// come after a larger one. The page shows each id once.
const OVERLAP: i64 = 64;
/// Ids a socket remembers having sent.
const REMEMBERED: usize = 4096;
/// A send that takes longer (a page that does not read) ends the socket.
const SEND_WITHIN: Duration = Duration::from_secs(10);

/// What one socket has sent, by id (bounded).
#[derive(Debug, Default)]
struct Sent {
    ids: std::collections::HashSet<i64>,
    order: std::collections::VecDeque<i64>,
    highest: i64,
}

impl Sent {
    /// False if `id` was sent already.
    fn add(&mut self, id: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.highest = self.highest.max(id);
        true
    }
}

/// Why a socket ended early.
enum Ended {
    /// The page went away or stopped reading.
    Gone,
    /// More was missed than a catch-up sends: the page must reload.
    Reload,
}

async fn send(ws: &mut WebSocket, text: String) -> Result<(), Ended> {
    match tokio::time::timeout(SEND_WITHIN, ws.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Ended::Gone),
    }
}

async fn close(ws: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_WITHIN, ws.send(Message::Close(Some(frame)))).await;
}

/// Whether the viewer's session still stands (not signed out, expired,
/// ended by a new password, its user disabled).
async fn still_signed_in(web: &Web, viewer: &Viewer) -> bool {
    let rel = &web.storage.relational;
    match rel.session(&viewer.digest).await {
        Ok(Some(_)) => matches!(rel.user(viewer.user.id).await, Ok(Some(u)) if !u.disabled),
        Ok(None) => false,
        // A store that does not answer ends nothing; the next ping asks again.
        Err(_) => true,
    }
}

async fn follow(
    mut ws: WebSocket,
    web: Web,
    view: View,
    viewer: Viewer,
    after: Option<i64>,
    ping: Duration,
) {
    if let Err(Ended::Reload) = run(&mut ws, &web, view, &viewer, after, ping).await {
        let _ = send(&mut ws, r#"{"reload":true}"#.to_owned()).await;
        close(
            &mut ws,
            axum::extract::ws::close_code::NORMAL,
            "reload the page",
        )
        .await;
    }
}

/// Serves one socket until it ends.
async fn run(
    ws: &mut WebSocket,
    web: &Web,
    view: View,
    viewer: &Viewer,
    after: Option<i64>,
    ping: Duration,
) -> Result<(), Ended> {
    let scope = viewer.scope();
    let admin = viewer.user.role == hendu_storage::model::Role::Admin;
    // Subscribed before catching up, so nothing falls between the two.
    let mut plays = after.map(|_| web.live.plays.subscribe());
    let mut alerts = web.live.alerts.subscribe();
    let mut sent = Sent {
        highest: after.unwrap_or(0),
        ..Sent::default()
    };
    {
        let ws = &mut *ws;
        if let Some(after) = after {
            catch_up(ws, web, view, scope, &mut sent, after).await?;
        }
        let mut pinger = tokio::time::interval(ping);
        pinger.tick().await;
        loop {
            tokio::select! {
                () = web.live.stop.cancelled() => {
                    close(ws, axum::extract::ws::close_code::AWAY, "the service is restarting").await;
                    return Err(Ended::Gone);
                }
                _ = pinger.tick() => {
                    if !still_signed_in(web, viewer).await {
                        close(ws, axum::extract::ws::close_code::POLICY, "signed out").await;
                        return Err(Ended::Gone);
                    }
                    if tokio::time::timeout(SEND_WITHIN, ws.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err()) {
                        return Err(Ended::Gone);
                    }
                }
                incoming = ws.recv() => match incoming {
                    // A page only listens; anything it sends is ignored.
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(Ended::Gone),
                    Some(Ok(_)) => {}
                },
                alert = alerts.recv() => match alert {
                    Ok(alert) => {
                        if alert.admits(viewer) {
                            send(ws, alert.message(view, admin)).await?;
                        }
                    }
                    // Alerts are a nudge: the stations page has the state.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(Ended::Gone),
                },
                play = next_play(&mut plays) => match play {
                    Ok(row) => {
                        if scope.admits(&row) && sent.add(row.play.id) {
                            send(ws, message(view, &row)).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let from = sent.highest;
                        catch_up(ws, web, view, scope, &mut sent, from).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Ended::Gone),
                },
            }
        }
    }
}

/// The next play for a page that shows plays; never, for one that does not.
async fn next_play(
    plays: &mut Option<broadcast::Receiver<Arc<PlayRow>>>,
) -> Result<Arc<PlayRow>, broadcast::error::RecvError> {
    match plays {
        Some(plays) => plays.recv().await,
        None => std::future::pending().await,
    }
}

/// Rounds of a catch-up before the page is told to reload instead.
const CATCH_UP_ROUNDS: usize = 5;

/// Sends the plays in `scope` recorded after `after` (less [`OVERLAP`]),
/// oldest first, that this socket has not sent.
async fn catch_up(
    ws: &mut WebSocket,
    web: &Web,
    view: View,
    scope: PlayScope,
    sent: &mut Sent,
    after: i64,
) -> Result<(), Ended> {
    let mut from = after.saturating_sub(OVERLAP).max(0);
    for _ in 0..CATCH_UP_ROUNDS {
        let mut filter = PlayFilter::scoped(scope);
        filter.after = Some(from);
        let page = PlayPage {
            order: PlayOrder::Recorded,
            descending: false,
            offset: 0,
            limit: CATCH_UP,
        };
        let rows = match web.storage.relational.play_rows(&filter, page).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch a live page up; it reloads");
                return Err(Ended::Reload);
            }
        };
        for row in &rows {
            from = row.play.id;
            if sent.add(row.play.id) {
                send(ws, message(view, row)).await?;
            }
        }
        if rows.len() < CATCH_UP as usize {
            return Ok(());
        }
    }
    Err(Ended::Reload)
}
