//! The web pages in process, on a real embedded store: who sees what,
//! sign-in and its limits, CSRF, session expiry, password change, disputes,
//! the CSV against the plays written, and live plays over the WebSocket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::time::Duration;

use futures_util::StreamExt;
use hendu_service::{Application, Auth};
use hendu_storage::credentials::{AuthKey, Purpose};
use hendu_storage::model::{
    ContentHash, NewMusic, NewPlay, NewRadio, NewUser, Role, Secret, Source, User,
};
use hendu_storage::{Event, QueueConfig, Storage};
use hendu_web::{Config, SERVICE, install};
use reqwest::header;
use time::OffsetDateTime;

const PASSWORD: &str = "twelve chars!";

struct Site {
    base: String,
    storage: Storage,
    http: reqwest::Client,
    users: Vec<(String, User)>,
    /// (play id, title, source name, visible to: emails)
    plays: Vec<Played>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct Played {
    id: i64,
    title: &'static str,
    source: &'static str,
    seconds: i64,
    seen_by: Vec<&'static str>,
}

fn config(spool: &std::path::Path) -> Config {
    Config {
        upload: hendu_service::catalogue::UploadConfig {
            max_upload: 4_000_000,
            max_track_s: 600.0,
            spool: spool.to_owned(),
        },
        session_idle: Duration::from_secs(3600),
        secure_cookies: false,
        max_sockets: 100,
        max_sockets_per_person: 3,
        ping_every: Duration::from_secs(1),
    }
}

async fn music(storage: &Storage, title: &str, owner: i64, seed: u8) -> i64 {
    let mut new = NewMusic::new(
        title,
        Some("Artista"),
        240_000,
        ContentHash::of(&[seed]),
        "x.ogg",
    )
    .unwrap();
    new.owner = Some(owner);
    storage
        .add_music(&new, &[], 3750, None)
        .await
        .unwrap()
        .record
        .id
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::days(2)
}

async fn record(storage: &Storage, music: i64, source: Source, start_s: i64, seconds: i64) -> i64 {
    let new = NewPlay::new(
        music,
        source,
        Some("Asunción"),
        t0() + time::Duration::seconds(start_s),
        t0() + time::Duration::seconds(start_s + seconds),
        0.87,
        &format!("{source}:{music}:{start_s}"),
    )
    .unwrap();
    storage
        .relational
        .record_play(&new)
        .await
        .unwrap()
        .record
        .id
}

async fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::embedded(&dir.path().join("hendu.db"), QueueConfig::default())
        .await
        .unwrap();
    let mut users = Vec::new();
    for (email, role) in [
        ("admin@example.org", Role::Admin),
        ("ana@example.org", Role::Musician),
        ("beto@example.org", Role::Musician),
        ("xavier@example.org", Role::Operator),
        ("yolanda@example.org", Role::Operator),
    ] {
        let new = NewUser::new(email, email, role, Secret::new(PASSWORD)).unwrap();
        users.push((
            email.to_owned(),
            storage.relational.add_user(&new).await.unwrap(),
        ));
    }
    let id = |i: usize| users[i].1.id;
    let alpha = music(&storage, "Alpha", id(1), 1).await;
    let gamma = music(&storage, "Gamma", id(2), 2).await;
    let radio = |name: &str, owner| {
        NewRadio::new(name, "http://radio.example.org/live", Some("Asunción"))
            .unwrap()
            .owned_by(Some(owner))
    };
    let x = storage
        .relational
        .add_radio(&radio("Radio X", id(3)))
        .await
        .unwrap()
        .record;
    let y = storage
        .relational
        .add_radio(&radio("Radio Y", id(4)))
        .await
        .unwrap()
        .record;
    let plays = vec![
        Played {
            id: record(&storage, alpha, Source::Radio(x.id), 0, 200).await,
            title: "Alpha",
            source: "Radio X",
            seconds: 200,
            seen_by: vec!["admin@example.org", "ana@example.org", "xavier@example.org"],
        },
        Played {
            id: record(&storage, gamma, Source::Radio(y.id), 600, 150).await,
            title: "Gamma",
            source: "Radio Y",
            seconds: 150,
            seen_by: vec![
                "admin@example.org",
                "beto@example.org",
                "yolanda@example.org",
            ],
        },
        Played {
            id: record(&storage, alpha, Source::Radio(y.id), 1200, 90).await,
            title: "Alpha",
            source: "Radio Y",
            seconds: 90,
            seen_by: vec![
                "admin@example.org",
                "ana@example.org",
                "yolanda@example.org",
            ],
        },
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = Auth::load(&storage).await.unwrap();
    let mut app = Application::new(
        SERVICE,
        listener,
        storage.clone(),
        auth,
        Duration::from_secs(5),
    );
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    install(&mut app, &config(&spool));
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Site {
        base,
        storage,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        users,
        plays,
        _dir: dir,
    }
}

/// `name=value` from a response's `Set-Cookie` headers.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?;
            let (k, value) = pair.split_once('=')?;
            (k == name && !value.is_empty()).then(|| pair.to_owned())
        })
}

/// The value of hidden field `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!(r#"name="{name}" value=""#))
        .unwrap_or_else(|| panic!("no field {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// A signed-in browser: its cookie and its forms' token.
#[derive(Debug, Clone)]
struct Browser {
    cookie: String,
    csrf: String,
}

impl Site {
    async fn try_sign_in(&self, email: &str, password: &str) -> reqwest::Response {
        let form = self
            .http
            .get(format!("{}/sign-in", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 200);
        let form_cookie = set_cookie(&form, "hendu_form").expect("the form's cookie");
        let page = form.text().await.unwrap();
        let token = hidden(&page, "form_token");
        self.http
            .post(format!("{}/sign-in", self.base))
            .header(header::COOKIE, form_cookie)
            .form(&[
                ("email", email),
                ("password", password),
                ("form_token", token.as_str()),
                ("next", "/plays"),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn sign_in(&self, email: &str) -> Browser {
        let r = self.try_sign_in(email, PASSWORD).await;
        assert_eq!(r.status(), 303, "{email} signs in");
        assert_eq!(r.headers()[header::LOCATION], "/plays");
        let set = r
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        assert!(
            set.iter().any(|c| c.starts_with("hendu_session=")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Lax")),
            "{set:?}"
        );
        let cookie = set_cookie(&r, "hendu_session").unwrap();
        let page = self.get(&cookie, "/account").await.text().await.unwrap();
        Browser {
            csrf: hidden(&page, "csrf"),
            cookie,
        }
    }

    async fn get(&self, cookie: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, cookie)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    fn user(&self, email: &str) -> &User {
        &self.users.iter().find(|(e, _)| e == email).unwrap().1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_visitors_are_sent_to_sign_in_and_see_nothing() {
    let site = site().await;
    for path in [
        "/dashboard",
        "/plays",
        "/plays.csv",
        "/account",
        "/live",
        &format!("/plays/{}", site.plays[0].id),
    ] {
        let r = site.get("", path).await;
        assert_eq!(r.status(), 303, "{path}");
        let to = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert_eq!(
            to,
            format!("/sign-in?next={}", path.replace('?', "%3F")),
            "{path}"
        );
        assert!(!r.text().await.unwrap().contains("Alpha"));
    }
    let r = site.get("", "/").await;
    assert_eq!(r.headers()[header::LOCATION], "/sign-in");
    let r = site.post("", "/sign-out", &[("csrf", "x")]).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // A forged session cookie is no session.
    let r = site
        .get(&format!("hendu_session={}", "a".repeat(64)), "/dashboard")
        .await;
    assert_eq!(r.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_sees_exactly_their_plays_on_every_page() {
    let site = site().await;
    for (email, _) in site.users.clone() {
        let b = site.sign_in(&email).await;
        let table = site.get(&b.cookie, "/plays").await;
        assert_eq!(table.status(), 200, "{email}");
        let table = table.text().await.unwrap();
        let dashboard = site
            .get(&b.cookie, "/dashboard")
            .await
            .text()
            .await
            .unwrap();
        let csv = site.get(&b.cookie, "/plays.csv").await;
        assert_eq!(
            csv.headers()[header::CONTENT_TYPE],
            "text/csv; charset=utf-8"
        );
        let csv = csv.text().await.unwrap();
        let mut lines = csv.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("play_id,started_at_utc,date")
        );
        let mut csv_ids: Vec<i64> = lines
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        csv_ids.sort_unstable();
        let seen: Vec<&Played> = site
            .plays
            .iter()
            .filter(|p| p.seen_by.contains(&email.as_str()))
            .collect();
        assert_eq!(
            csv_ids,
            seen.iter().map(|p| p.id).collect::<Vec<_>>(),
            "{email}'s CSV"
        );
        for p in &site.plays {
            let link = format!("href=\"/plays/{}\"", p.id);
            let visible = p.seen_by.contains(&email.as_str());
            assert_eq!(
                table.contains(&link),
                visible,
                "{email}, play {} in the table",
                p.id
            );
            assert_eq!(
                dashboard.contains(&link),
                visible,
                "{email}, play {} on the dashboard",
                p.id
            );
            let page = site.get(&b.cookie, &format!("/plays/{}", p.id)).await;
            assert_eq!(
                page.status(),
                if visible { 200 } else { 404 },
                "{email}, play {}",
                p.id
            );
            let page = page.text().await.unwrap();
            assert_eq!(page.contains(p.title), visible, "{email}, play {}", p.id);
        }
        // Nothing of another viewer's sources or tracks, in the filters either.
        for (title, source) in [("Gamma", "Radio Y"), ("Alpha", "Radio X")] {
            let shown = seen.iter().any(|p| p.title == title);
            assert_eq!(table.contains(title), shown, "{email}: {title}");
            let heard = seen.iter().any(|p| p.source == source);
            assert_eq!(table.contains(source), heard, "{email}: {source}");
        }
        // A filter for another owner's track finds nothing, and says so.
        let gamma_id = site
            .storage
            .relational
            .music_by_hash(&ContentHash::of(&[2]))
            .await
            .unwrap()
            .unwrap()
            .id;
        let filtered = site
            .get(&b.cookie, &format!("/plays?track={gamma_id}"))
            .await
            .text()
            .await
            .unwrap();
        let gammas = seen.iter().filter(|p| p.title == "Gamma").count();
        assert!(filtered.contains(&format!("{gammas} plays")), "{email}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_has_a_row_per_play_with_its_fields() {
    let site = site().await;
    let b = site.sign_in("admin@example.org").await;
    let csv = site
        .get(&format!("{}; hendu_tz=-180", b.cookie), "/plays.csv")
        .await
        .text()
        .await
        .unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), site.plays.len());
    for (row, p) in rows.iter().zip(&site.plays) {
        let play = site
            .storage
            .relational
            .plays_of_music(
                site.storage
                    .relational
                    .music_by_hash(&ContentHash::of(&[if p.title == "Alpha" { 1 } else { 2 }]))
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                t0() - time::Duration::days(1),
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap()
            .into_iter()
            .find(|x| x.id == p.id)
            .unwrap();
        assert_eq!(row[0], p.id.to_string());
        let local = play
            .started_at
            .to_offset(time::UtcOffset::from_hms(-3, 0, 0).unwrap());
        assert_eq!(
            row[2],
            format!(
                "{:04}-{:02}-{:02}",
                local.year(),
                u8::from(local.month()),
                local.day()
            )
        );
        assert_eq!(
            row[3],
            format!(
                "{:02}:{:02}:{:02}",
                local.hour(),
                local.minute(),
                local.second()
            )
        );
        assert_eq!(row[5], "UTC-03:00");
        assert_eq!(row[6], format!("{}.000", p.seconds));
        assert_eq!(row[7], p.title);
        assert_eq!(row[8], "Artista");
        assert_eq!(row[9], "", "no ISRC given");
        assert_eq!(row[10], "radio");
        assert_eq!(row[11], p.source);
        assert_eq!(row[12], "Asunción");
        assert_eq!(row[13], "0.870");
    }
    // Filtered by period: the days are the viewer's.
    let today = OffsetDateTime::now_utc().date();
    let none = site
        .get(&b.cookie, &format!("/plays.csv?from={today}"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(none.lines().count(), 1, "only the header");
    let bad = site.get(&b.cookie, "/plays.csv?from=yesterday").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_wrong_passwords_then_limits_them_and_forms_need_their_token() {
    let site = site().await;
    let r = site
        .try_sign_in("ana@example.org", "not the password")
        .await;
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "hendu_session").is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong e-mail or password.")
    );
    let r = site.try_sign_in("nobody@example.org", PASSWORD).await;
    assert_eq!(r.status(), 401, "an unknown e-mail gets the same answer");

    // A sign-in form posted without its own cookie (from another site).
    let r = site
        .http
        .post(format!("{}/sign-in", site.base))
        .form(&[
            ("email", "ana@example.org"),
            ("password", PASSWORD),
            ("form_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Forms of a session need its token.
    let b = site.sign_in("ana@example.org").await;
    let r = site
        .post(&b.cookie, "/sign-out", &[("csrf", &"0".repeat(64))])
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        site.get(&b.cookie, "/dashboard").await.status(),
        200,
        "still signed in"
    );
    let r = site
        .post(
            &b.cookie,
            &format!("/plays/{}/dispute", site.plays[0].id),
            &[("csrf", "nope"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = site
        .post(&b.cookie, "/sign-out", &[("csrf", &b.csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        site.get(&b.cookie, "/dashboard").await.status(),
        303,
        "signed out"
    );

    // Repeated failures for one e-mail are limited.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            site.try_sign_in("beto@example.org", "wrong wrong wrong")
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = site.try_sign_in("beto@example.org", PASSWORD).await;
    assert_eq!(r.status(), 429, "even the right password waits");
    assert!(r.headers().contains_key(header::RETRY_AFTER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expires_and_a_new_password_signs_other_browsers_out() {
    let site = site().await;
    let first = site.sign_in("ana@example.org").await;
    let second = site.sign_in("ana@example.org").await;

    // Expire the first browser's session in the store.
    let key = AuthKey::load(&site.storage).await.unwrap();
    let secret = first.cookie.split_once('=').unwrap().1;
    let digest = key.digest(Purpose::WebSession, secret).to_hex();
    site.storage
        .relational
        .extend_session(
            &digest,
            OffsetDateTime::now_utc() - time::Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(
        site.get(&first.cookie, "/dashboard").await.status(),
        303,
        "expired"
    );
    assert_eq!(site.get(&second.cookie, "/dashboard").await.status(), 200);

    let third = site.sign_in("ana@example.org").await;
    let wrong = site
        .post(
            &third.cookie,
            "/account",
            &[
                ("csrf", &third.csrf),
                ("current", "not it at all"),
                ("new", "a new password"),
                ("repeat", "a new password"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 403);
    let differ = site
        .post(
            &third.cookie,
            "/account",
            &[
                ("csrf", &third.csrf),
                ("current", PASSWORD),
                ("new", "a new password"),
                ("repeat", "another one!!"),
            ],
        )
        .await;
    assert_eq!(differ.status(), 422);
    let changed = site
        .post(
            &third.cookie,
            "/account",
            &[
                ("csrf", &third.csrf),
                ("current", PASSWORD),
                ("new", "a new password"),
                ("repeat", "a new password"),
            ],
        )
        .await;
    assert_eq!(changed.status(), 303);
    let renewed = set_cookie(&changed, "hendu_session").expect("this browser stays signed in");
    assert_eq!(site.get(&renewed, "/account?changed=1").await.status(), 200);
    assert_eq!(
        site.get(&third.cookie, "/dashboard").await.status(),
        303,
        "its old session ended"
    );
    assert_eq!(
        site.get(&second.cookie, "/dashboard").await.status(),
        303,
        "other browsers are signed out"
    );
    assert_eq!(
        site.try_sign_in("ana@example.org", PASSWORD).await.status(),
        401
    );
    assert_eq!(
        site.try_sign_in("ana@example.org", "a new password")
            .await
            .status(),
        303
    );

    // A disabled user's sessions stop working.
    let b = site.sign_in("beto@example.org").await;
    site.storage
        .relational
        .set_user_disabled(site.user("beto@example.org").id, true)
        .await
        .unwrap();
    assert_eq!(site.get(&b.cookie, "/dashboard").await.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_musician_disputes_their_own_play_once() {
    let site = site().await;
    let ana = site.sign_in("ana@example.org").await;
    let beto = site.sign_in("beto@example.org").await;
    let xavier = site.sign_in("xavier@example.org").await;
    let play = site.plays[0].id;
    let path = format!("/plays/{play}/dispute");
    let r = site
        .post(
            &beto.cookie,
            &path,
            &[("csrf", &beto.csrf), ("reason", "mine!")],
        )
        .await;
    assert_eq!(r.status(), 404, "another owner's play is not found");
    let r = site
        .post(
            &xavier.cookie,
            &path,
            &[("csrf", &xavier.csrf), ("reason", "no")],
        )
        .await;
    assert_eq!(r.status(), 403, "operators do not dispute");
    let r = site
        .post(&ana.cookie, &path, &[("csrf", &ana.csrf), ("reason", "  ")])
        .await;
    assert_eq!(r.status(), 422);
    let r = site
        .post(
            &ana.cookie,
            &path,
            &[
                ("csrf", &ana.csrf),
                ("reason", "That was the cover by another band"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = site
        .get(&ana.cookie, &format!("/plays/{play}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("That was the cover by another band"));
    assert!(!page.contains("name=\"reason\""), "disputed once");
    let open = site
        .storage
        .relational
        .disputes(hendu_storage::queries::DisputeState::Open, 0, 10)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].user_id, site.user("ana@example.org").id);
    let admin = site.sign_in("admin@example.org").await;
    let page = site
        .get(&admin.cookie, &format!("/plays/{play}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("That was the cover by another band"),
        "an administrator sees it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_speak_spanish_when_the_browser_asks() {
    let site = site().await;
    let b = site.sign_in("ana@example.org").await;
    let r = site
        .http
        .get(format!("{}/dashboard", site.base))
        .header(header::COOKIE, &b.cookie)
        .header(header::ACCEPT_LANGUAGE, "es-PY,es;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(r.contains(r#"<html lang="es">"#));
    assert!(r.contains("Sus reproducciones"));
    let switched = site
        .get(&format!("{}; hendu_lang=en", b.cookie), "/dashboard")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        switched.contains("Your plays"),
        "the switch wins over the browser"
    );
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn live(site: &Site, cookie: &str, after: i64) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/live?after={after}", site.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn next_play(ws: &mut Socket) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("a play within 2 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_plays_reach_open_pages_live_and_missed_ones_on_reconnect() {
    let site = site().await;
    let ana = site.sign_in("ana@example.org").await;
    let mut ws = live(&site, &ana.cookie, 0).await;
    // First what was recorded before: ana's two plays, oldest first.
    assert_eq!(next_play(&mut ws).await["id"], site.plays[0].id);
    assert_eq!(next_play(&mut ws).await["id"], site.plays[2].id);

    let alpha = site
        .storage
        .relational
        .music_by_hash(&ContentHash::of(&[1]))
        .await
        .unwrap()
        .unwrap()
        .id;
    let gamma = site
        .storage
        .relational
        .music_by_hash(&ContentHash::of(&[2]))
        .await
        .unwrap()
        .unwrap()
        .id;
    let radio = site.storage.relational.radios().await.unwrap()[0].id;
    let publish = |music, play_id| {
        let storage = site.storage.clone();
        async move {
            storage
                .events
                .publish(&Event::PlayRecognised {
                    play_id,
                    music_id: music,
                    source: Source::Radio(radio),
                })
                .await
                .unwrap();
        }
    };
    // Beto's new play is not shown to ana; her next one is, within 2 s.
    let theirs = record(&site.storage, gamma, Source::Radio(radio), 3000, 100).await;
    publish(gamma, theirs).await;
    let started = std::time::Instant::now();
    let mine = record(&site.storage, alpha, Source::Radio(radio), 4000, 100).await;
    publish(alpha, mine).await;
    let shown = next_play(&mut ws).await;
    assert_eq!(shown["id"], mine);
    assert_eq!(shown["track"], "Alpha · Artista");
    assert_eq!(shown["url"], format!("/plays/{mine}"));
    eprintln!(
        "a live play reached the page {:?} after it was published",
        started.elapsed()
    );

    // Away for a while: what was recorded meanwhile (no event seen) comes on
    // reconnect, after a few plays from before the last one shown (plays
    // commit out of id order; the page shows each id once).
    ws.close(None).await.unwrap();
    let missed = record(&site.storage, alpha, Source::Radio(radio), 5000, 100).await;
    let mut ws = live(&site, &ana.cookie, mine).await;
    let seen = [site.plays[0].id, site.plays[2].id, mine];
    loop {
        let id = next_play(&mut ws).await["id"].as_i64().unwrap();
        if id == missed {
            break;
        }
        assert!(
            seen.contains(&id),
            "only ana's plays, the new one after those shown: {id}"
        );
    }

    // A foreign page may not open the socket; a signed-out page's socket is closed.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/live?after=0", site.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert(header::COOKIE, ana.cookie.parse().unwrap());
    request
        .headers_mut()
        .insert(header::ORIGIN, "https://elsewhere.example".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "refused"
    );
    let r = site
        .post(&ana.cookie, "/sign-out", &[("csrf", &ana.csrf)])
        .await;
    assert_eq!(r.status(), 303);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("closed at the next ping");
    assert_eq!(closed, Some(1008), "closed for policy: signed out");
}

/// The text of every part of an XLSX workbook (a zip of XML parts).
fn workbook_text(bytes: &[u8]) -> String {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut all = String::new();
    for i in 0..zip.len() {
        let mut part = zip.by_index(i).unwrap();
        part.read_to_string(&mut all).unwrap();
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_report_has_their_stations_plays_row_by_row() {
    let site = site().await;
    let yolanda = site.sign_in("yolanda@example.org").await;
    let xavier = site.sign_in("xavier@example.org").await;
    let radios = site.storage.relational.radios().await.unwrap();
    let y = radios.iter().find(|r| r.name == "Radio Y").unwrap();
    let from = (t0() - time::Duration::days(1)).date();
    let to = OffsetDateTime::now_utc().date();
    let query = format!("source=radio:{}&from={from}&to={to}", y.id);

    let page = site
        .get(&yolanda.cookie, &format!("/reports?{query}"))
        .await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("<strong>Radio Y</strong>"));
    assert!(page.contains("<strong>2</strong> plays"));
    for p in &site.plays {
        let listed = page.contains(&format!("href=\"/plays/{}\"", p.id));
        assert_eq!(listed, p.source == "Radio Y", "play {}", p.id);
    }

    // The summary, a row per track.
    let csv = site
        .get(&yolanda.cookie, &format!("/reports/summary.csv?{query}"))
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "source,period_from,period_to,utc_offset,title,artist,isrc,plays,duration_s"
    );
    let mut rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            vec![
                "Radio Y",
                &from.to_string(),
                &to.to_string(),
                "UTC+00:00",
                "Alpha",
                "Artista",
                "",
                "1",
                "90.000"
            ],
            vec![
                "Radio Y",
                &from.to_string(),
                &to.to_string(),
                "UTC+00:00",
                "Gamma",
                "Artista",
                "",
                "1",
                "150.000"
            ],
        ]
    );

    // The workbook has both sheets with the same plays.
    let book = site
        .get(&yolanda.cookie, &format!("/reports.xlsx?{query}"))
        .await;
    assert_eq!(book.status(), 200);
    assert_eq!(
        book.headers()[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let text = workbook_text(&book.bytes().await.unwrap());
    for s in [
        "Summary",
        "Plays",
        "Radio Y",
        "Alpha",
        "Gamma",
        "Duration played (s)",
    ] {
        assert!(text.contains(s), "the workbook has {s}");
    }
    assert!(!text.contains("Radio X"));

    // Another operator's station gives them nothing of it.
    let theirs = site
        .get(&xavier.cookie, &format!("/reports?{query}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !theirs.contains("Gamma") && !theirs.contains("Radio Y"),
        "nothing of another operator's station"
    );
    let theirs = site
        .get(&xavier.cookie, &format!("/reports.xlsx?{query}"))
        .await
        .bytes()
        .await
        .unwrap();
    let text = workbook_text(&theirs);
    assert!(!text.contains("Gamma") && !text.contains("Radio Y"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_reach_the_administration_and_their_changes_take_effect() {
    let site = site().await;
    let key = AuthKey::load(&site.storage).await.unwrap();
    let digest = key.digest(
        Purpose::DeviceSecret,
        "a device secret of sixty-four characters, more or less",
    );
    let imei = hendu_storage::model::Imei::parse("490154203237518").unwrap();
    site.storage
        .relational
        .add_device(
            &hendu_storage::model::NewDevice::new(imei.clone(), "Stage left", None, digest)
                .unwrap(),
        )
        .await
        .unwrap();
    let pages = [
        "/admin",
        "/admin/users",
        "/admin/devices",
        "/admin/stations",
        "/admin/claims",
        "/admin/disputes",
        "/admin/dead-letters",
        "/admin/dead-letters?queue=raw-results",
    ];
    let admin = site.sign_in("admin@example.org").await;
    for email in ["ana@example.org", "xavier@example.org"] {
        let b = site.sign_in(email).await;
        for path in pages {
            assert_eq!(
                site.get(&b.cookie, path).await.status(),
                403,
                "{email} {path}"
            );
        }
        let r = site
            .post(
                &b.cookie,
                &format!("/admin/devices/{}", imei.as_str()),
                &[("csrf", &b.csrf), ("enabled", "false")],
            )
            .await;
        assert_eq!(r.status(), 403, "{email} changes no device");
        let dashboard = site
            .get(&b.cookie, "/dashboard")
            .await
            .text()
            .await
            .unwrap();
        assert!(
            !dashboard.contains("href=\"/admin\""),
            "no way in is shown to {email}"
        );
    }
    for path in pages {
        assert_eq!(site.get("", path).await.status(), 303, "anonymous {path}");
        let r = site.get(&admin.cookie, path).await;
        let status = r.status();
        let expected = if path == "/admin" { 303 } else { 200 };
        assert_eq!(status, expected, "admin {path}");
    }
    let devices = site
        .get(&admin.cookie, "/admin/devices")
        .await
        .text()
        .await
        .unwrap();
    assert!(devices.contains("490154203237518") && devices.contains("Stage left"));

    // A device disabled from its page.
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/devices/{}", imei.as_str()),
            &[("csrf", "wrong"), ("enabled", "false")],
        )
        .await;
    assert_eq!(r.status(), 403, "the form's token is needed");
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/devices/{}", imei.as_str()),
            &[("csrf", &admin.csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        !site
            .storage
            .relational
            .device_by_imei(&imei)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );

    // A user created, who signs in; a password reset signs them out.
    let r = site
        .post(
            &admin.cookie,
            "/admin/users",
            &[
                ("csrf", &admin.csrf),
                ("email", "nueva@example.org"),
                ("name", "Nueva"),
                ("role", "operator"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let nueva = site.sign_in("nueva@example.org").await;
    let id = site
        .storage
        .relational
        .user_by_email("nueva@example.org")
        .await
        .unwrap()
        .unwrap()
        .id;
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/users/{id}"),
            &[
                ("csrf", &admin.csrf),
                ("action", "password"),
                ("password", "reset by the admin"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        site.get(&nueva.cookie, "/dashboard").await.status(),
        303,
        "signed out by the reset"
    );
    assert_eq!(
        site.try_sign_in("nueva@example.org", "reset by the admin")
            .await
            .status(),
        303
    );
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/users/{id}"),
            &[("csrf", &admin.csrf), ("action", "disable")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        site.storage
            .relational
            .user(id)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    let own = site.user("admin@example.org").id;
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/users/{own}"),
            &[("csrf", &admin.csrf), ("action", "disable")],
        )
        .await;
    assert_eq!(
        r.status(),
        400,
        "an administrator cannot lock themselves out"
    );

    // A dispute settled.
    let ana = site.sign_in("ana@example.org").await;
    let play = site.plays[0].id;
    site.post(
        &ana.cookie,
        &format!("/plays/{play}/dispute"),
        &[("csrf", &ana.csrf), ("reason", "not mine")],
    )
    .await;
    let listed = site
        .get(&admin.cookie, "/admin/disputes")
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("not mine"));
    let dispute = site.storage.relational.disputes_of(play).await.unwrap()[0].id;
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/disputes/{dispute}"),
            &[("csrf", &admin.csrf), ("upheld", "true")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        site.storage.relational.disputes_of(play).await.unwrap()[0].state,
        hendu_storage::queries::DisputeState::Upheld
    );
    let r = site
        .post(
            &admin.cookie,
            &format!("/admin/disputes/{dispute}"),
            &[("csrf", &admin.csrf), ("upheld", "false")],
        )
        .await;
    assert_eq!(r.status(), 404, "settled once");
}

/// `seconds` of a WAV that fingerprints well: tones that change every
/// tenth of a second, chosen by `seed`.
fn wav(seed: u64, seconds: u32) -> Vec<u8> {
    const RATE: u32 = 22_050;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut tone = 440.0_f32;
    for i in 0..RATE * seconds {
        if i % (RATE / 10) == 0 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            tone = 200.0 + (state >> 33) as f32 % 3000.0;
        }
        let t = i as f32 / RATE as f32;
        let s = 0.4 * (std::f32::consts::TAU * tone * t).sin()
            + 0.2 * (std::f32::consts::TAU * tone * 1.5 * t).sin();
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

impl Site {
    /// Posts the catalogue page's form as a browser would: the token first.
    async fn upload(
        &self,
        browser: &Browser,
        csrf: Option<&str>,
        audio: Vec<u8>,
        fields: &[(&'static str, &'static str)],
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        if let Some(token) = csrf {
            form = form.text("csrf", token.to_owned());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(audio).file_name("canción.wav"),
        );
        for (k, v) in fields {
            form = form.text(*k, *v);
        }
        self.http
            .post(format!("{}/catalogue", self.base))
            .header(header::COOKIE, &browser.cookie)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn musicians_upload_see_and_delete_their_tracks_on_the_catalogue_page() {
    let site = site().await;
    let ana = site.sign_in("ana@example.org").await;
    let beto = site.sign_in("beto@example.org").await;
    let admin = site.sign_in("admin@example.org").await;
    let xavier = site.sign_in("xavier@example.org").await;
    let spool = site._dir.path().join("spool");
    let spool_is_empty = || std::fs::read_dir(&spool).unwrap().next().is_none();

    // Ana uploads a track: it is stored as hers, with its ISRC, and listed.
    let r = site
        .upload(
            &ana,
            Some(&ana.csrf),
            wav(7, 8),
            &[
                ("title", "Delta"),
                ("artist", "Ana"),
                ("isrc", "py-a01-24-00001"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let id: i64 = to
        .strip_prefix("/catalogue?added=")
        .unwrap()
        .parse()
        .unwrap();
    let stored = site.storage.relational.music(id).await.unwrap().unwrap();
    assert_eq!(stored.title, "Delta");
    assert_eq!(stored.owner, Some(site.user("ana@example.org").id));
    assert_eq!(stored.isrc.as_deref(), Some("PYA012400001"));
    assert!(!site.storage.documents.blocks(id).await.unwrap().is_empty());
    let page = site.get(&ana.cookie, &to).await.text().await.unwrap();
    assert!(page.contains("Track added"), "{page}");
    assert!(page.contains("Delta") && page.contains("PYA012400001"));
    assert!(page.contains("Alpha"), "her earlier track is listed too");
    assert!(!page.contains("Gamma"), "not Beto's");
    assert!(spool_is_empty(), "the spooled upload is gone");

    // Beto neither sees nor deletes it; the same audio from him is a claim.
    let page = site
        .get(&beto.cookie, "/catalogue")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Gamma") && !page.contains("Delta") && !page.contains("Alpha"));
    let r = site
        .post(
            &beto.cookie,
            &format!("/catalogue/{id}/delete"),
            &[("csrf", &beto.csrf)],
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = site.upload(&beto, Some(&beto.csrf), wav(7, 8), &[]).await;
    assert_eq!(r.headers()[header::LOCATION], "/catalogue?claimed=1");
    let claims = site
        .storage
        .relational
        .claims(hendu_storage::model::ClaimState::Pending, 0, 10)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].music_id, id);
    assert_eq!(claims[0].claimant_id, site.user("beto@example.org").id);

    // Ana's upload of the same audio again changes nothing.
    let r = site.upload(&ana, Some(&ana.csrf), wav(7, 8), &[]).await;
    assert_eq!(
        r.headers()[header::LOCATION],
        format!("/catalogue?again={id}").as_str()
    );

    // The administrator sees every track; an operator keeps no catalogue.
    let page = site
        .get(&admin.cookie, "/catalogue")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Delta") && page.contains("Gamma") && page.contains("Alpha"));
    assert_eq!(site.get(&xavier.cookie, "/catalogue").await.status(), 403);
    let r = site
        .upload(&xavier, Some(&xavier.csrf), wav(8, 8), &[])
        .await;
    assert_eq!(r.status(), 403);

    // Refusals store nothing: no token (or another session's) before the
    // audio, audio that is not audio, a bad ISRC.
    let before = site
        .storage
        .relational
        .musics(hendu_storage::model::MusicState::Ready, 0, 100)
        .await
        .unwrap()
        .len();
    let r = site.upload(&ana, None, wav(9, 8), &[]).await;
    assert_eq!(r.status(), 403);
    let r = site.upload(&ana, Some(&beto.csrf), wav(9, 8), &[]).await;
    assert_eq!(r.status(), 403);
    let r = site
        .upload(&ana, Some(&ana.csrf), b"not audio at all".repeat(100), &[])
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("The upload was refused"), "{page}");
    let r = site
        .upload(&ana, Some(&ana.csrf), wav(9, 8), &[("isrc", "nonsense")])
        .await;
    assert_eq!(r.status(), 422);
    let after = site
        .storage
        .relational
        .musics(hendu_storage::model::MusicState::Ready, 0, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);
    assert!(spool_is_empty());

    // Ana deletes her track: no longer listed nor matched; a stale form
    // token deletes nothing.
    let r = site
        .post(
            &ana.cookie,
            &format!("/catalogue/{id}/delete"),
            &[("csrf", "stale")],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = site
        .post(
            &ana.cookie,
            &format!("/catalogue/{id}/delete"),
            &[("csrf", &ana.csrf)],
        )
        .await;
    assert_eq!(r.headers()[header::LOCATION], "/catalogue?deleted=1");
    let state = site
        .storage
        .relational
        .music(id)
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_ne!(state, hendu_storage::model::MusicState::Ready);
    let page = site
        .get(&ana.cookie, "/catalogue?deleted=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Track deleted"), "{page}");
    assert!(!page.contains("Delta"), "{page}");
}

impl Site {
    /// An API token of `email`'s, made as `hendu token create` makes one.
    async fn token(&self, email: &str) -> String {
        let auth = Auth::load(&self.storage).await.unwrap();
        let issued = hendu_storage::credentials::issue_token(auth.key());
        let new = hendu_storage::model::NewToken::new(
            &issued.public_id,
            &issued.digest,
            self.user(email),
            "tool",
        )
        .unwrap();
        self.storage.relational.add_token(&new).await.unwrap();
        issued.token.expose().to_owned()
    }

    async fn api(&self, token: Option<&str>, path: &str) -> (u16, serde_json::Value) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        (status, r.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_gives_each_token_exactly_its_plays_and_reports() {
    let site = site().await;
    let first = site.plays[0].id;
    for path in ["/v1/plays", &format!("/v1/plays/{first}"), "/v1/reports"] {
        let (status, body) = site.api(None, path).await;
        assert_eq!(status, 401, "{path}");
        assert!(body["error"]["code"].is_string());
        assert!(!body.to_string().contains("Alpha"));
    }
    for (email, _) in &site.users {
        let token = site.token(email).await;
        let seen: Vec<&Played> = site
            .plays
            .iter()
            .filter(|p| p.seen_by.contains(&email.as_str()))
            .collect();
        let (status, page) = site
            .api(Some(&token), "/v1/plays?sort=recorded&dir=asc")
            .await;
        assert_eq!(status, 200, "{email}");
        let ids: Vec<i64> = page["plays"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            ids,
            seen.iter().map(|p| p.id).collect::<Vec<_>>(),
            "{email}"
        );
        assert_eq!(page["total"].as_u64(), Some(seen.len() as u64));
        for p in &site.plays {
            let (status, one) = site.api(Some(&token), &format!("/v1/plays/{}", p.id)).await;
            if p.seen_by.contains(&email.as_str()) {
                assert_eq!(status, 200, "{email} reads play {}", p.id);
                assert_eq!(one["play"]["title"], p.title);
                assert_eq!(one["play"]["source"]["name"], p.source);
                assert_eq!(one["play"]["duration_s"].as_f64(), Some(p.seconds as f64));
            } else {
                assert_eq!(status, 404, "{email} must not read play {}", p.id);
                assert!(!one.to_string().contains(p.title));
            }
        }
        let (status, report) = site.api(Some(&token), "/v1/reports").await;
        assert_eq!(status, 200);
        assert_eq!(report["plays"].as_u64(), Some(seen.len() as u64), "{email}");
        let seconds: i64 = seen.iter().map(|p| p.seconds).sum();
        assert_eq!(report["seconds"].as_f64(), Some(seconds as f64), "{email}");
        let titles: Vec<&str> = report["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for p in &site.plays {
            assert_eq!(
                titles.contains(&p.title),
                seen.iter().any(|s| s.title == p.title),
                "{email}: {}",
                p.title
            );
        }
    }

    // Filters, pages and refusals, as the administrator.
    let token = site.token("admin@example.org").await;
    let radios = site.storage.relational.radios().await.unwrap();
    let y = radios.iter().find(|r| r.name == "Radio Y").unwrap().id;
    let (_, page) = site
        .api(Some(&token), &format!("/v1/plays?source=radio:{y}&limit=1"))
        .await;
    assert_eq!(page["total"].as_u64(), Some(2));
    assert_eq!(page["plays"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_offset"].as_u64(), Some(1));
    let (_, page) = site
        .api(
            Some(&token),
            &format!("/v1/plays?source=radio:{y}&offset=1"),
        )
        .await;
    assert_eq!(page["plays"].as_array().unwrap().len(), 1);
    assert!(page["next_offset"].is_null());
    let after = (t0() + time::Duration::seconds(500))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, report) = site
        .api(
            Some(&token),
            &format!("/v1/reports?from={}", session_encode(&after)),
        )
        .await;
    assert_eq!(report["plays"].as_u64(), Some(2), "{report}");
    for bad in [
        "/v1/plays?from=yesterday",
        "/v1/plays?limit=0",
        "/v1/plays?limit=5000",
        "/v1/plays?sort=colour",
        "/v1/plays?dir=up",
        "/v1/plays?source=tv:1",
        "/v1/plays?track=alpha",
        "/v1/plays?offset=-1",
        "/v1/reports?to=2026-13-01",
    ] {
        let (status, body) = site.api(Some(&token), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string(), "{bad}");
    }
    let (status, _) = site.api(Some(&token), "/v1/plays/not-a-number").await;
    assert_eq!(status, 404);
}

/// A value for a query string.
fn session_encode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_organiser_reads_the_plays_of_the_devices_an_administrator_gives_them() {
    let site = site().await;
    let key = AuthKey::load(&site.storage).await.unwrap();
    let digest = key.digest(Purpose::DeviceSecret, "the stage's secret, long enough");
    let imei = hendu_storage::model::Imei::parse("490154203237518").unwrap();
    let device = site
        .storage
        .relational
        .add_device(
            &hendu_storage::model::NewDevice::new(imei.clone(), "Festival stage", None, digest)
                .unwrap(),
        )
        .await
        .unwrap();
    let music = music(&site.storage, "Epsilon", site.user("ana@example.org").id, 9).await;
    let at_event = record(&site.storage, music, Source::Device(device.id), 3000, 120).await;
    let admin = site.sign_in("admin@example.org").await;
    let xavier = site.sign_in("xavier@example.org").await;
    let yolanda = site.sign_in("yolanda@example.org").await;
    let sees = |b: &Browser| {
        let cookie = b.cookie.clone();
        let site = &site;
        async move {
            site.get(&cookie, &format!("/plays/{at_event}"))
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(sees(&xavier).await, 404, "nobody's device yet");

    // The administrator gives the device to Xavier, from the devices page.
    let page = site
        .get(&admin.cookie, "/admin/devices")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Festival stage") && page.contains("xavier@example.org"));
    let path = format!("/admin/devices/{}", imei.as_str());
    let xavier_id = site.user("xavier@example.org").id.to_string();
    let r = site
        .post(
            &admin.cookie,
            &path,
            &[("csrf", &admin.csrf), ("owner", &xavier_id)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(sees(&xavier).await, 200);
    assert_eq!(sees(&yolanda).await, 404);
    let plays = site
        .get(&xavier.cookie, "/plays")
        .await
        .text()
        .await
        .unwrap();
    assert!(plays.contains("Festival stage"), "{plays}");
    let token = site.token("xavier@example.org").await;
    let (_, page) = site
        .api(
            Some(&token),
            &format!("/v1/plays?source=device:{}", device.id),
        )
        .await;
    assert_eq!(page["total"].as_u64(), Some(1));
    let (_, report) = site.api(Some(&token), "/v1/reports").await;
    assert!(report.to_string().contains("Festival stage"), "{report}");

    // A musician cannot organise events; taken back, the plays go with it.
    let ana_id = site.user("ana@example.org").id.to_string();
    let r = site
        .post(
            &admin.cookie,
            &path,
            &[("csrf", &admin.csrf), ("owner", &ana_id)],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(sees(&xavier).await, 200);
    let r = site
        .post(
            &admin.cookie,
            &path,
            &[("csrf", &admin.csrf), ("owner", "")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(sees(&xavier).await, 404);
    // Nobody else gives devices away.
    let r = site
        .post(
            &xavier.cookie,
            &path,
            &[("csrf", &xavier.csrf), ("owner", &xavier_id)],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(sees(&xavier).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_holds_only_so_many_live_pages() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let site = site().await;
    let ana = site.sign_in("ana@example.org").await;
    let beto = site.sign_in("beto@example.org").await;
    let connect = |cookie: String| {
        let url = format!("{}/live", site.base.replacen("http", "ws", 1));
        async move {
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert(header::COOKIE, cookie.parse().unwrap());
            tokio_tungstenite::connect_async(request).await
        }
    };
    // The test's configuration allows three pages a person.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(ana.cookie.clone()).await.unwrap().0);
    }
    match connect(ana.cookie.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            assert!(r.headers().contains_key(header::RETRY_AFTER));
        }
        other => panic!("a fourth page of Ana's must be refused: {other:?}"),
    }
    // Another person is not held back by Ana's pages.
    let _beto = connect(beto.cookie.clone()).await.unwrap().0;
    // A page closed frees its seat.
    let mut closed = open.pop().unwrap();
    closed.close(None).await.unwrap();
    drop(closed);
    let again = eventually_connects(|| connect(ana.cookie.clone())).await;
    assert!(again, "a seat is free again once a page closes");
}

/// Whether `connect` succeeds within two seconds (a closed page's seat is
/// freed when the server sees it close).
async fn eventually_connects<F, Fut, T, E>(connect: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..40 {
        if connect().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_lists_go_on_past_their_first_page() {
    let site = site().await;
    let key = AuthKey::load(&site.storage).await.unwrap();
    let lots = hendu_web::pages::admin::LIST as usize + 5;
    let mut ids = Vec::new();
    for i in 0..lots {
        // 15 digits with a Luhn check digit.
        let body = format!("35{:012}", i);
        let sum: u32 = body
            .chars()
            .rev()
            .enumerate()
            .map(|(k, c)| {
                let d = c.to_digit(10).unwrap();
                if k % 2 == 0 {
                    let twice = d * 2;
                    if twice > 9 { twice - 9 } else { twice }
                } else {
                    d
                }
            })
            .sum();
        let imei = format!("{body}{}", (10 - sum % 10) % 10);
        let digest = key.digest(Purpose::DeviceSecret, &imei);
        let new = hendu_storage::model::NewDevice::new(
            hendu_storage::model::Imei::parse(&imei).unwrap(),
            &format!("Sensor {i:04}"),
            None,
            digest,
        )
        .unwrap();
        ids.push(site.storage.relational.add_device(&new).await.unwrap().id);
    }
    let admin = site.sign_in("admin@example.org").await;
    let first = site
        .get(&admin.cookie, "/admin/devices")
        .await
        .text()
        .await
        .unwrap();
    assert!(first.contains("Sensor 0000") && first.contains("Sensor 0499"));
    assert!(!first.contains("Sensor 0500"));
    let next = format!("/admin/devices?after={}", ids[499]);
    assert!(first.contains(&next), "a link to the next page");
    let second = site.get(&admin.cookie, &next).await.text().await.unwrap();
    assert!(second.contains("Sensor 0500") && second.contains("Sensor 0504"));
    assert!(!second.contains("Sensor 0499"));
    assert!(!second.contains("Next page"), "the last page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stations_going_down_alert_administrators_and_their_operator_live() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let site = site().await;
    let radios = site.storage.relational.radios().await.unwrap();
    let x = radios.iter().find(|r| r.name == "Radio X").unwrap().id;
    let y = radios.iter().find(|r| r.name == "Radio Y").unwrap().id;
    let mut sockets = Vec::new();
    for email in ["admin@example.org", "xavier@example.org", "ana@example.org"] {
        let b = site.sign_in(email).await;
        // The administration's pages carry the alerts' place; the plays none.
        let page = site.get(&b.cookie, "/account").await.text().await.unwrap();
        assert_eq!(
            page.contains("live-alerts"),
            email != "ana@example.org",
            "{email}"
        );
        let url = format!("{}/live", site.base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert(header::COOKIE, b.cookie.parse().unwrap());
        sockets.push(tokio_tungstenite::connect_async(request).await.unwrap().0);
    }
    // The sockets are in place once the hub has them; then the stations fail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for event in [
        Event::StationDown {
            radio_id: y,
            reason: "refused".into(),
        },
        Event::StationSilent {
            radio_id: x,
            silent_s: 30.0,
        },
    ] {
        site.storage.events.publish(&event).await.unwrap();
    }
    let (admin, rest) = sockets.split_first_mut().unwrap();
    let first = next_text(admin)
        .await
        .expect("the administrator hears of Radio Y");
    assert_eq!(first["alert"]["station"], "Radio Y");
    assert_eq!(first["alert"]["state"], "down");
    assert_eq!(first["alert"]["url"], "/admin/stations");
    let second = next_text(admin).await.expect("and of Radio X");
    assert_eq!(second["alert"]["state"], "silent");
    let xavier = next_text(&mut rest[0])
        .await
        .expect("Xavier hears of his station");
    assert_eq!(xavier["alert"]["station"], "Radio X");
    assert_eq!(xavier["alert"]["url"], format!("/reports?source=radio:{x}"));
    assert!(next_text(&mut rest[0]).await.is_none(), "not of Yolanda's");
    assert!(
        next_text(&mut rest[1]).await.is_none(),
        "a musician hears of no station"
    );
}

/// The next text message within 2 s, if one comes (pings do not count).
async fn next_text(ws: &mut Socket) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        if let Ok(tokio_tungstenite::tungstenite::Message::Text(t)) = m {
            return Some(serde_json::from_str(&t).unwrap());
        }
    }
}
