//! The web service measured as a process (release build) on the test
//! servers, with a million plays in MySQL:
//!
//! 1. page render time (request to the last byte), p50 and p99, of the
//!    dashboard, the plays table (first and a deep page) and a month's
//!    report, for a musician (their share of the plays) and an administrator
//!    (all of them);
//! 2. WebSocket fan-out: N open dashboards of one musician, a play of theirs
//!    recorded and published, the time until the last page has it; and the
//!    service's memory per open socket.
//!
//! Usage: bench/web/run.sh [--plays N] [--sockets N] [--requests N]
//! (`--requests 0` measures the live pages only)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hendu_e2e::Service;
use hendu_storage::model::{
    ContentHash, NewMusic, NewPlay, NewRadio, NewUser, Role, Secret, Source,
};
use hendu_storage::testing::{Kind, Place};
use hendu_storage::{Event, Storage, StorageConfig};
use time::OffsetDateTime;

struct Args {
    plays: usize,
    sockets: usize,
    requests: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        plays: 1_000_000,
        sockets: 1_000,
        requests: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--plays" => a.plays = value.parse()?,
            "--sockets" => a.sockets = value.parse()?,
            "--requests" => a.requests = value.parse()?,
            _ => bail!("unknown flag {flag}; see the file's header"),
        }
    }
    Ok(a)
}

const PASSWORD: &str = "a benchmark password";
const MUSICIANS: usize = 20;
const TRACKS: usize = 400;
const RADIOS: usize = 50;
const DEVICES: usize = 50;

/// A small deterministic generator (the same plays every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn imei(i: usize) -> String {
    let body = format!("{:014}", 35_000_000_000_000u64 + i as u64);
    let digit = hendu_storage::model::Imei::check_digit(&body);
    format!("{body}{digit}")
}

struct World {
    musician: String,
    musician_tracks: Vec<i64>,
    musician_radio: i64,
}

/// Users, tracks, stations, devices, and `n` plays over the last year.
async fn populate(storage: &Storage, config: &StorageConfig, n: usize) -> Result<World> {
    let rel = &storage.relational;
    let user = |email: String, role| async move {
        let new = NewUser::new(&email, &email, role, Secret::new(PASSWORD))?;
        anyhow::Ok(rel.add_user(&new).await?)
    };
    user("admin@bench.hendu".into(), Role::Admin).await?;
    let mut musicians = Vec::new();
    for i in 0..MUSICIANS {
        musicians.push(user(format!("musician{i}@bench.hendu"), Role::Musician).await?);
    }
    let operator = user("operator@bench.hendu".into(), Role::Operator).await?;
    let mut tracks = Vec::new();
    for i in 0..TRACKS {
        let mut new = NewMusic::new(
            &format!("Track {i}"),
            Some(&format!("Artist {}", i % 37)),
            240_000,
            ContentHash::of(&(i as u64).to_le_bytes()),
            &format!("bench/{i}.ogg"),
        )?;
        new.owner = Some(musicians[i % MUSICIANS].id);
        tracks.push(storage.add_music(&new, &[], 3750, None).await?.record);
    }
    let mut radios = Vec::new();
    for i in 0..RADIOS {
        let new = NewRadio::new(
            &format!("Radio {i}"),
            &format!("http://radio{i}.example.org/live"),
            Some(&format!("City {}", i % 12)),
        )?
        .owned_by(Some(operator.id));
        radios.push(rel.add_radio(&new).await?.record);
    }
    let key = hendu_storage::credentials::AuthKey::load(storage).await?;
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let digest = key.digest(
            hendu_storage::credentials::Purpose::DeviceSecret,
            &format!("secret {i}"),
        );
        let new = hendu_storage::model::NewDevice::new(
            hendu_storage::model::Imei::parse(&imei(i))?,
            &format!("Sensor {i}"),
            Some(&format!("Venue {}", i % 9)),
            digest,
        )?;
        devices.push(rel.add_device(&new).await?);
    }

    let StorageConfig::Servers(servers) = config else {
        bail!("the benchmark runs on the servers")
    };
    let pool = sqlx::MySqlPool::connect(servers.mysql_url.expose()).await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut rng = Lcg(42);
    let started = Instant::now();
    const BATCH: usize = 2_000;
    let mut written = 0;
    while written < n {
        let rows = BATCH.min(n - written);
        let mut sql = String::from(
            "INSERT INTO results (music_id, source_kind, radio_id, device_id, location, \
             started_at, ended_at, score, idempotency_key) VALUES ",
        );
        for r in 0..rows {
            let music = &tracks[rng.below(TRACKS as u64) as usize];
            let start = now - rng.below(365 * 86_400) as i64 - 600;
            let length = 60 + rng.below(240) as i64;
            let (kind, radio, device, location) = if rng.below(10) < 7 {
                let radio = &radios[rng.below(RADIOS as u64) as usize];
                (
                    "radio",
                    radio.id.to_string(),
                    "NULL".to_owned(),
                    radio.location.clone().unwrap_or_default(),
                )
            } else {
                let d = &devices[rng.below(DEVICES as u64) as usize];
                (
                    "device",
                    "NULL".to_owned(),
                    d.id.to_string(),
                    d.location.clone().unwrap_or_default(),
                )
            };
            if r > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({}, '{kind}', {radio}, {device}, '{location}', FROM_UNIXTIME({start}), \
                 FROM_UNIXTIME({}), 0.9, 'bench-{}')",
                music.id,
                start + length,
                written + r
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await?;
        written += rows;
        if written % 100_000 == 0 {
            eprintln!(
                "  {written} plays written ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query("ANALYZE TABLE results").execute(&pool).await?;
    eprintln!(
        "{n} plays written in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let musician = &musicians[0];
    Ok(World {
        musician: musician.email.clone(),
        musician_tracks: tracks
            .iter()
            .filter(|t| t.owner == Some(musician.id))
            .map(|t| t.id)
            .collect(),
        musician_radio: radios[0].id,
    })
}

/// Signs in through the form; returns the session cookie (`name=value`).
async fn sign_in(http: &reqwest::Client, base: &str, email: &str) -> Result<String> {
    let form = http.get(format!("{base}/sign-in")).send().await?;
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.split(';')
                    .next()
                    .filter(|p| p.starts_with(&format!("{name}=")))
                    .map(str::to_owned)
            })
    };
    let form_cookie = cookie(&form, "hendu_form").context("no form cookie")?;
    let page = form.text().await?;
    let at = page
        .find("name=\"form_token\" value=\"")
        .context("no form token")?
        + 25;
    let token = &page[at..at + 64];
    let r = http
        .post(format!("{base}/sign-in"))
        .header(reqwest::header::COOKIE, form_cookie)
        .form(&[
            ("email", email),
            ("password", PASSWORD),
            ("form_token", token),
        ])
        .send()
        .await?;
    cookie(&r, "hendu_session")
        .with_context(|| format!("{email} could not sign in: {}", r.status()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `requests` renders of `path`: (p50, p99, max) in ms, and the page size.
async fn render(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    requests: usize,
) -> Result<(f64, f64, f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..requests {
        let t = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await?;
        if r.status() != 200 {
            bail!("{path}: {}", r.status());
        }
        size = r.bytes().await?.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        *times.last().unwrap_or(&0.0),
        size,
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let place = Place::new(Kind::Servers).await;
    let storage = Storage::connect(&place.config).await?;
    eprintln!("writing {} plays into MySQL", args.plays);
    let world = populate(&storage, &place.config, args.plays).await?;
    let web = Service::start(
        "hendu-web",
        "web-bench",
        &place.config,
        &[
            ("HENDU_WEB_SECURE_COOKIES", "false".into()),
            ("HENDU_WEB_MAX_SOCKETS", (args.sockets + 100).to_string()),
            (
                "HENDU_HTTP_MAX_CONNECTIONS",
                (args.sockets + 200).to_string(),
            ),
            ("HENDU_LOG", "warn".into()),
        ],
    )
    .await?;
    // The sign-in answers with a redirect that carries the cookie.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let musician = sign_in(&http, &web.base, &world.musician).await?;
    let admin = sign_in(&http, &web.base, "admin@bench.hendu").await?;
    let operator = sign_in(&http, &web.base, "operator@bench.hendu").await?;
    let rel = &storage.relational;
    let all =
        hendu_storage::queries::PlayFilter::scoped(hendu_storage::queries::PlayScope::Everything);
    let mine = rel
        .count_plays(&hendu_storage::queries::PlayFilter::scoped(
            hendu_storage::queries::PlayScope::OwnedBy(
                rel.user_by_email(&world.musician)
                    .await?
                    .context("musician")?
                    .id,
            ),
        ))
        .await?;
    println!(
        "## Pages ({} plays in MySQL; the musician owns {} of {TRACKS} tracks and {mine} plays; {} requests each, one at a time)\n",
        rel.count_plays(&all).await?,
        world.musician_tracks.len(),
        args.requests
    );
    println!("| page | viewer | p50 | p99 | max | bytes |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let month = {
        let today = OffsetDateTime::now_utc().date();
        let first = today.replace_day(1).unwrap_or(today);
        let end = first.previous_day().unwrap_or(today);
        format!(
            "/reports?source=radio:{}&from={}&to={end}",
            world.musician_radio,
            end.replace_day(1).unwrap_or(end)
        )
    };
    let pages: Vec<(&str, &str, String)> = vec![
        ("dashboard", "musician", "/dashboard".into()),
        (
            "dashboard, by month",
            "musician",
            "/dashboard?period=month".into(),
        ),
        ("plays, first page", "musician", "/plays".into()),
        ("plays, page 100", "musician", "/plays?page=100".into()),
        ("dashboard", "admin", "/dashboard".into()),
        ("plays, first page", "admin", "/plays".into()),
        ("plays, page 1000", "admin", "/plays?page=1000".into()),
        ("a station's month report", "operator", month),
    ];
    for (name, who, path) in pages.iter().filter(|_| args.requests > 0) {
        let cookie = match *who {
            "musician" => &musician,
            "admin" => &admin,
            _ => &operator,
        };
        let (p50, p99, max, size) = render(&http, &web.base, cookie, path, args.requests).await?;
        println!(
            "| {name} (`{path}`) | {who} | {p50:.1} ms | {p99:.1} ms | {max:.1} ms | {size} |"
        );
    }

    // Fan-out.
    let ws_base = web.base.replacen("http", "ws", 1);
    let after = rel
        .play_rows(
            &all,
            hendu_storage::queries::PlayPage {
                order: hendu_storage::queries::PlayOrder::Recorded,
                descending: true,
                offset: 0,
                limit: 1,
            },
        )
        .await?
        .first()
        .map_or(0, |r| r.play.id);
    let rss_before = web.rss_kb();
    let mut sockets = Vec::new();
    for _ in 0..args.sockets {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{ws_base}/live?after={after}").into_client_request()?;
        request
            .headers_mut()
            .insert(reqwest::header::COOKIE, musician.parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = web.rss_kb();
    // (socket, play id, when it arrived)
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, i64, Instant)>();
    for (i, ws) in sockets.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let (mut write, mut read) = ws.split();
            while let Some(Ok(m)) = read.next().await {
                match m {
                    tokio_tungstenite::tungstenite::Message::Text(t) => {
                        let at = Instant::now();
                        let id = serde_json::from_str::<serde_json::Value>(&t)
                            .ok()
                            .and_then(|v| v["id"].as_i64())
                            .unwrap_or(-1);
                        let _ = tx.send((i, id, at));
                    }
                    tokio_tungstenite::tungstenite::Message::Ping(p) => {
                        let _ = write
                            .send(tokio_tungstenite::tungstenite::Message::Pong(p))
                            .await;
                    }
                    _ => {}
                }
            }
        });
    }
    drop(tx);
    println!(
        "\n## Live pages ({} open dashboards of one musician)\n\nservice memory: {:.1} MB before, {:.1} MB with them open: {:.1} KB per open page\n",
        args.sockets,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / args.sockets as f64
    );
    println!("| round | pages that had it | first | p50 | p99 | last |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let t0 = OffsetDateTime::now_utc();
    for round in 0..5 {
        let music = world.musician_tracks[round % world.musician_tracks.len()];
        let play = NewPlay::new(
            music,
            Source::Radio(world.musician_radio),
            Some("City 0"),
            t0 + time::Duration::minutes(round as i64 * 10),
            t0 + time::Duration::minutes(round as i64 * 10 + 3),
            0.9,
            &format!("bench-live-{round}"),
        )?;
        // What the pages were sent before (their catch-up) is not this round's.
        while rx.try_recv().is_ok() {}
        let recorded = rel.record_play(&play).await?.record;
        let published = Instant::now();
        storage
            .events
            .publish(&Event::PlayRecognised {
                play_id: recorded.id,
                music_id: music,
                source: Source::Radio(world.musician_radio),
            })
            .await?;
        let mut times = Vec::new();
        let deadline = published + Duration::from_secs(30);
        while times.len() < args.sockets {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((_, id, at))) if id == recorded.id => {
                    times.push(at.duration_since(published).as_secs_f64() * 1000.0);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        times.sort_by(f64::total_cmp);
        if times.is_empty() {
            bail!("no page had the play");
        }
        println!(
            "| {} | {} of {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            round + 1,
            times.len(),
            args.sockets,
            times[0],
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
