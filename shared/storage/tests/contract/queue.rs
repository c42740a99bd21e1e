//! The work queue: shared by consumers, at least once, crash-proof.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hendu_storage::model::{NewSample, Source};
use hendu_storage::queue::{
    Backlog, DeadReason, Queue, SampleQueued, requeue_lost_samples, too_many_deliveries,
};
use hendu_storage::{Event, Shard, Storage, StorageError};
use time::OffsetDateTime;

use crate::harness::{CLAIM_AFTER, Harness, Kind};

crate::contract!(queue:
    entries_are_shared_between_consumers_and_acknowledged_once,
    an_unacknowledged_entry_goes_to_another_consumer_after_the_timeout,
    an_entry_read_by_a_killed_consumer_is_processed_by_another,
    a_blocked_reader_wakes_for_a_push,
    events_reach_every_subscriber,
    a_poison_entry_goes_to_the_dead_letters_while_the_entries_behind_it_flow,
    a_consumer_moves_an_entry_that_can_never_succeed_to_the_dead_letters_at_once,
    dead_letters_are_listed_requeued_and_discarded,
    a_held_delivery_is_neither_taken_over_nor_counted_again,
    lost_samples_are_queued_again_by_reconciliation,
    every_shard_reads_every_entry_which_leaves_once_all_are_done,
);

const WAIT: Duration = Duration::from_millis(200);

async fn drain(storage: &Storage, consumer: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let got = storage
            .queue
            .read(Queue::Samples, consumer, 3, WAIT)
            .await
            .unwrap();
        if got.is_empty() {
            return seen;
        }
        for d in got {
            storage.queue.ack(Queue::Samples, &d.id).await.unwrap();
            seen.push(String::from_utf8(d.payload).unwrap());
        }
    }
}

pub async fn entries_are_shared_between_consumers_and_acknowledged_once(kind: Kind) {
    let h = Harness::new(kind).await;
    for i in 0..20 {
        h.storage
            .queue
            .push(Queue::Samples, format!("s{i}").as_bytes())
            .await
            .unwrap();
    }
    h.storage
        .queue
        .push(Queue::RawResults, b"r0")
        .await
        .unwrap();
    assert_eq!(
        h.storage.queue.backlog(Queue::Samples).await.unwrap(),
        Backlog {
            waiting: 20,
            pending: 0,
            dead: 0
        }
    );

    let (a, b) = tokio::join!(drain(&h.storage, "a"), drain(&h.storage, "b"));
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    assert_eq!(
        all,
        (0..20).map(|i| format!("s{i}")).collect::<Vec<_>>(),
        "each entry exactly once"
    );
    assert_eq!(
        h.storage.queue.backlog(Queue::Samples).await.unwrap(),
        Backlog::default()
    );
    assert_eq!(
        h.storage.queue.backlog(Queue::RawResults).await.unwrap(),
        Backlog {
            waiting: 1,
            pending: 0,
            dead: 0
        }
    );
}

pub async fn an_unacknowledged_entry_goes_to_another_consumer_after_the_timeout(kind: Kind) {
    let h = Harness::new(kind).await;
    h.storage.queue.push(Queue::Samples, b"only").await.unwrap();
    let first = h
        .storage
        .queue
        .read(Queue::Samples, "a", 10, WAIT)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(!first[0].redelivered);
    assert_eq!(
        h.storage.queue.backlog(Queue::Samples).await.unwrap(),
        Backlog {
            waiting: 0,
            pending: 1,
            dead: 0
        }
    );

    // Within the timeout the entry stays with its consumer.
    assert!(
        h.storage
            .queue
            .read(Queue::Samples, "b", 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(CLAIM_AFTER + Duration::from_millis(100)).await;
    let second = h
        .storage
        .queue
        .read(Queue::Samples, "b", 10, WAIT)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].payload, b"only");
    assert!(second[0].redelivered);
    h.storage
        .queue
        .ack(Queue::Samples, &second[0].id)
        .await
        .unwrap();
    // The slow first consumer's late acknowledgement is harmless.
    h.storage
        .queue
        .ack(Queue::Samples, &first[0].id)
        .await
        .unwrap();
    assert_eq!(
        h.storage.queue.backlog(Queue::Samples).await.unwrap(),
        Backlog::default()
    );
}

pub async fn an_entry_read_by_a_killed_consumer_is_processed_by_another(kind: Kind) {
    let h = Harness::new(kind).await;
    h.storage
        .queue
        .push(Queue::Samples, b"sample-1")
        .await
        .unwrap();
    h.storage
        .queue
        .push(Queue::Samples, b"sample-2")
        .await
        .unwrap();

    // A consumer in another process reads one entry and is killed (SIGKILL)
    // before it acknowledges.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "queue::consumer_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "HENDU_TEST_CONSUMER_CONFIG",
            crate::harness::config_to_env(&h.config),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let read_by_child = tokio::task::spawn_blocking(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            // libtest may print "test ... " on the same line first.
            .find_map(|l| l.split_once("READ ").map(|(_, entry)| entry.to_owned()))
    })
    .await
    .unwrap()
    .expect("the consumer process read an entry");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(read_by_child, "sample-1");

    // Another consumer gets both entries: the new one at once, the killed
    // consumer's once the claim timeout has passed.
    let started = Instant::now();
    let mut processed = Vec::new();
    while processed.len() < 2 && started.elapsed() < Duration::from_secs(10) {
        for d in h
            .storage
            .queue
            .read(Queue::Samples, "survivor", 10, WAIT)
            .await
            .unwrap()
        {
            processed.push((String::from_utf8(d.payload).unwrap(), d.redelivered));
            h.storage.queue.ack(Queue::Samples, &d.id).await.unwrap();
        }
    }
    processed.sort();
    assert_eq!(
        processed,
        vec![("sample-1".into(), true), ("sample-2".into(), false)]
    );
    assert_eq!(
        h.storage.queue.backlog(Queue::Samples).await.unwrap(),
        Backlog::default()
    );
}

/// The killed consumer of the test above (run only as its child process).
#[tokio::test]
#[ignore = "run by an_entry_read_by_a_killed_consumer_is_processed_by_another"]
async fn consumer_process() {
    let config =
        crate::harness::config_from_env(&std::env::var("HENDU_TEST_CONSUMER_CONFIG").unwrap());
    let storage = Storage::connect(&config).await.unwrap();
    let got = storage
        .queue
        .read(Queue::Samples, "doomed", 1, Duration::from_secs(5))
        .await
        .unwrap();
    println!("READ {}", String::from_utf8_lossy(&got[0].payload));
    tokio::time::sleep(Duration::from_secs(60)).await;
}

pub async fn a_blocked_reader_wakes_for_a_push(kind: Kind) {
    let h = Harness::new(kind).await;
    let storage = h.storage.clone();
    let reader = tokio::spawn(async move {
        let started = Instant::now();
        let got = storage
            .queue
            .read(Queue::RawResults, "waiter", 1, Duration::from_secs(10))
            .await
            .unwrap();
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.storage
        .queue
        .push(Queue::RawResults, b"late")
        .await
        .unwrap();
    let (got, waited) = reader.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"late");
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
}

pub async fn events_reach_every_subscriber(kind: Kind) {
    let h = Harness::new(kind).await;
    let mut a = h.storage.events.subscribe().await.unwrap();
    let mut b = h.storage.events.subscribe().await.unwrap();
    let event = Event::PlayRecognised {
        play_id: 5,
        music_id: 9,
        source: hendu_storage::model::Source::Radio(3),
    };
    h.storage.events.publish(&event).await.unwrap();
    for sub in [&mut a, &mut b] {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap();
        assert_eq!(got, Some(event.clone()));
    }
}

pub async fn a_poison_entry_goes_to_the_dead_letters_while_the_entries_behind_it_flow(kind: Kind) {
    const MAX: u32 = 3;
    let h = Harness::with_max_deliveries(kind, MAX).await;
    let q = &h.storage.queue;
    q.push(Queue::Samples, b"poison").await.unwrap();
    let mut pushed = 0;
    let mut done = Vec::new();
    let mut poison_deliveries = Vec::new();
    let started = Instant::now();
    // A consumer that never gets past the poison entry (it "crashes" on it:
    // no acknowledgement), while new work keeps arriving behind it.
    while q.backlog(Queue::Samples).await.unwrap().dead == 0 {
        assert!(
            started.elapsed() < CLAIM_AFTER * (MAX + 4) * 2,
            "the poison entry never left the queue"
        );
        q.push(Queue::Samples, format!("s{pushed}").as_bytes())
            .await
            .unwrap();
        pushed += 1;
        for d in q.read(Queue::Samples, "c", 10, WAIT).await.unwrap() {
            if d.payload == b"poison" {
                assert_eq!(d.redelivered, d.deliveries > 1);
                poison_deliveries.push(d.deliveries);
            } else {
                assert_eq!(d.deliveries, 1);
                q.ack(Queue::Samples, &d.id).await.unwrap();
                done.push(String::from_utf8(d.payload).unwrap());
            }
        }
    }
    assert_eq!(poison_deliveries, (1..=MAX).collect::<Vec<_>>());
    // Everything behind it was delivered (the rest now).
    done.extend(drain(&h.storage, "c").await);
    assert_eq!(
        done,
        (0..pushed).map(|i| format!("s{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        q.backlog(Queue::Samples).await.unwrap(),
        Backlog {
            waiting: 0,
            pending: 0,
            dead: 1
        }
    );
    let dead = q.dead_letters(Queue::Samples, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, b"poison");
    assert_eq!(dead[0].queue, Queue::Samples);
    assert_eq!(dead[0].deliveries, MAX);
    assert_eq!(dead[0].reason, too_many_deliveries(MAX));
    assert_eq!(
        dead[0].reason,
        "delivered 3 times without being acknowledged"
    );
    let age = OffsetDateTime::now_utc() - dead[0].dead_at;
    assert!(
        age >= time::Duration::ZERO - time::Duration::seconds(2)
            && age < time::Duration::minutes(1),
        "{age}"
    );
    assert!(
        q.dead_letters(Queue::RawResults, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let counts = q.dead_counts();
    assert_eq!(counts.get(Queue::Samples, DeadReason::MaxDeliveries), 1);
    assert_eq!(counts.get(Queue::Samples, DeadReason::Refused), 0);
    // For administrators: the payload as text.
    let shown = serde_json::to_value(&dead[0]).unwrap();
    assert_eq!(shown["payload"], "poison");
    assert_eq!(shown["queue"], "samples");
    assert_eq!(shown["deliveries"], MAX);
    assert!(shown["dead_at"].as_str().unwrap().ends_with('Z'));
    // It is not delivered again, even after the claim timeout.
    tokio::time::sleep(CLAIM_AFTER + Duration::from_millis(100)).await;
    assert!(
        q.read(Queue::Samples, "c", 10, WAIT)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_consumer_moves_an_entry_that_can_never_succeed_to_the_dead_letters_at_once(
    kind: Kind,
) {
    let h = Harness::new(kind).await;
    let q = &h.storage.queue;
    q.push(Queue::RawResults, b"bad").await.unwrap();
    q.push(Queue::RawResults, b"good").await.unwrap();
    let got = q.read(Queue::RawResults, "c", 10, WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload, b"bad");
    q.dead_letter(Queue::RawResults, &got[0], "malformed entry")
        .await
        .unwrap();
    q.ack(Queue::RawResults, &got[1].id).await.unwrap();
    // Again (a retry after a lost answer): one dead letter still.
    q.dead_letter(Queue::RawResults, &got[0], "malformed entry")
        .await
        .unwrap();
    // An entry acknowledged meanwhile is left alone.
    q.dead_letter(Queue::RawResults, &got[1], "too late")
        .await
        .unwrap();
    assert_eq!(
        q.backlog(Queue::RawResults).await.unwrap(),
        Backlog {
            waiting: 0,
            pending: 0,
            dead: 1
        }
    );
    let dead = q.dead_letters(Queue::RawResults, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].payload.as_slice(),
            dead[0].reason.as_str(),
            dead[0].deliveries
        ),
        (&b"bad"[..], "malformed entry", 1)
    );
    assert_eq!(dead[0].queue, Queue::RawResults);
    assert_eq!(
        q.dead_counts().get(Queue::RawResults, DeadReason::Refused),
        1
    );
    tokio::time::sleep(CLAIM_AFTER + Duration::from_millis(100)).await;
    assert!(
        q.read(Queue::RawResults, "c", 10, WAIT)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn dead_letters_are_listed_requeued_and_discarded(kind: Kind) {
    let h = Harness::new(kind).await;
    let q = &h.storage.queue;
    for name in ["d0", "d1", "d2"] {
        q.push(Queue::Samples, name.as_bytes()).await.unwrap();
    }
    // Delivered twice, then refused.
    let first = q.read(Queue::Samples, "c", 10, WAIT).await.unwrap();
    assert_eq!(first.len(), 3);
    tokio::time::sleep(CLAIM_AFTER + Duration::from_millis(100)).await;
    let again = q.read(Queue::Samples, "c", 10, WAIT).await.unwrap();
    assert_eq!(
        again.iter().map(|d| d.deliveries).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    for d in &again {
        q.dead_letter(Queue::Samples, d, "bad data").await.unwrap();
    }

    // Pages, oldest first.
    let page = q.dead_letters(Queue::Samples, None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = q
        .dead_letters(Queue::Samples, Some(&page[1].id), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let all: Vec<_> = page.iter().chain(&rest).collect();
    assert_eq!(
        all.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(),
        [b"d0".to_vec(), b"d1".to_vec(), b"d2".to_vec()]
    );
    assert!(
        all.iter()
            .all(|d| d.deliveries == 2 && d.reason == "bad data")
    );
    assert!(
        q.dead_letters(Queue::Samples, Some(&rest[0].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        q.dead_letters(Queue::Samples, Some("nonsense"), 2).await,
        Err(StorageError::Invalid(_))
    ));

    // Requeued: a fresh entry at the end of the queue, counted from 1 again.
    assert!(
        q.requeue_dead_letter(Queue::Samples, &all[0].id)
            .await
            .unwrap()
    );
    assert!(
        !q.requeue_dead_letter(Queue::Samples, &all[0].id)
            .await
            .unwrap()
    );
    assert!(
        !q.requeue_dead_letter(Queue::RawResults, &all[1].id)
            .await
            .unwrap(),
        "another queue's"
    );
    let back = q.read(Queue::Samples, "c", 10, WAIT).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].payload, b"d0");
    assert_eq!((back[0].deliveries, back[0].redelivered), (1, false));
    q.ack(Queue::Samples, &back[0].id).await.unwrap();

    // Discarded: gone.
    assert!(
        q.discard_dead_letter(Queue::Samples, &all[1].id)
            .await
            .unwrap()
    );
    assert!(
        !q.discard_dead_letter(Queue::Samples, &all[1].id)
            .await
            .unwrap()
    );
    for bad in ["nonsense", "", "12-x", "0-0"] {
        assert!(
            !q.discard_dead_letter(Queue::Samples, bad).await.unwrap(),
            "{bad:?}"
        );
        assert!(
            !q.requeue_dead_letter(Queue::Samples, bad).await.unwrap(),
            "{bad:?}"
        );
    }
    let left = q.dead_letters(Queue::Samples, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload, b"d2");
    assert_eq!(
        q.backlog(Queue::Samples).await.unwrap(),
        Backlog {
            waiting: 0,
            pending: 0,
            dead: 1
        }
    );
}

pub async fn a_held_delivery_is_neither_taken_over_nor_counted_again(kind: Kind) {
    let h = Harness::new(kind).await;
    let q = &h.storage.queue;
    q.push(Queue::Samples, b"slow").await.unwrap();
    q.push(Queue::Samples, b"next").await.unwrap();
    let got = q.read(Queue::Samples, "a", 1, WAIT).await.unwrap();
    assert_eq!(got[0].payload, b"slow");
    let held = Instant::now();
    // Held twice within the claim timeout, past it in all.
    for _ in 0..2 {
        tokio::time::sleep(CLAIM_AFTER * 2 / 3).await;
        assert!(q.hold(Queue::Samples, "a", &got[0].id).await.unwrap());
    }
    assert!(held.elapsed() > CLAIM_AFTER);
    assert!(
        !q.hold(Queue::Samples, "b", &got[0].id).await.unwrap(),
        "not b's"
    );
    let other = q
        .read(Queue::Samples, "b", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(other.len(), 1, "only the entry nobody holds");
    assert_eq!(other[0].payload, b"next");
    q.ack(Queue::Samples, &other[0].id).await.unwrap();
    // Once the holder stops, it goes on as if delivered once before.
    tokio::time::sleep(CLAIM_AFTER + Duration::from_millis(100)).await;
    let taken = q.read(Queue::Samples, "b", 10, WAIT).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].deliveries, taken[0].redelivered), (2, true));
    assert!(
        !q.hold(Queue::Samples, "a", &got[0].id).await.unwrap(),
        "taken over"
    );
    q.ack(Queue::Samples, &taken[0].id).await.unwrap();
    assert!(
        !q.hold(Queue::Samples, "b", &taken[0].id).await.unwrap(),
        "acknowledged"
    );
    assert!(!q.hold(Queue::Samples, "b", "nonsense").await.unwrap());
}

fn sample(source: Source, captured_at: OffsetDateTime) -> NewSample {
    NewSample::new(source, None, captured_at, 30_000, vec![2, 1, 5, 0, 40]).unwrap()
}

/// The raw result of a sample that matched nothing.
fn no_match(s: &NewSample) -> hendu_storage::model::RawResult {
    hendu_storage::model::RawResult {
        sample_id: s.id.clone(),
        source: s.source,
        captured_at: s.captured_at,
        duration_ms: s.duration_ms,
        location: None,
        matched: None,
        stored_at: None,
    }
}

fn queued_ids(entries: &[(String, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(_, p)| serde_json::from_slice::<SampleQueued>(p).unwrap().sample_id)
        .collect()
}

pub async fn lost_samples_are_queued_again_by_reconciliation(kind: Kind) {
    let h = Harness::new(kind).await;
    let (docs, q) = (&h.storage.documents, &h.storage.queue);
    let source = Source::Device(7);
    let hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let at = |s: i64| hour_ago + time::Duration::seconds(30 * s);
    let [lost, queued, recognised, poison, recent] =
        [at(0), at(1), at(2), at(3), OffsetDateTime::now_utc()].map(|t| sample(source, t));
    for s in [&lost, &queued, &recognised, &poison, &recent] {
        assert!(docs.put_sample(s).await.unwrap());
    }
    let entry = |s: &NewSample| {
        serde_json::to_vec(&SampleQueued {
            sample_id: s.id.clone(),
            source,
        })
        .unwrap()
    };
    // `queued` waits in the queue; `recognised` was recognised (its raw
    // result waits for the filter); `poison`
    // went to the dead letters; `lost` was stored and its entry lost (Redis
    // restarted); `recent` may still be in flight.
    q.push(Queue::Samples, &entry(&poison)).await.unwrap();
    let d = q.read(Queue::Samples, "c", 1, WAIT).await.unwrap();
    assert_eq!(d[0].payload, entry(&poison));
    q.dead_letter(Queue::Samples, &d[0], "peaks do not unpack")
        .await
        .unwrap();
    q.push(Queue::Samples, &entry(&queued)).await.unwrap();
    docs.put_raw_result(&no_match(&recognised)).await.unwrap();
    let unsettled = docs
        .unsettled_samples(OffsetDateTime::now_utc() - time::Duration::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(
        unsettled
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        [&lost.id, &queued.id, &recognised.id, &poison.id].map(|s| s.clone())
    );
    assert!(unsettled.iter().all(|(_, s)| *s == source));

    let age = Duration::from_secs(300);
    let done = requeue_lost_samples(&h.storage, age, 100).await.unwrap();
    assert_eq!((done.requeued, done.set_aside, done.skipped), (1, 1, false));
    let entries = q.entries(Queue::Samples, None, 100).await.unwrap();
    // `queued` was read by nobody; `lost` is queued behind it, once.
    assert_eq!(queued_ids(&entries), [queued.id.clone(), lost.id.clone()]);
    // Paging through what is queued delivers nothing.
    let page = q
        .entries(Queue::Samples, Some(&entries[0].0), 100)
        .await
        .unwrap();
    assert_eq!(queued_ids(&page), [lost.id.as_str()]);
    assert_eq!(q.backlog(Queue::Samples).await.unwrap().waiting, 2);

    // A second pass (another replica, or the next period) changes nothing:
    // both are queued, and the poison sample is left to an administrator
    // even once its dead letter is discarded.
    let dead = q.dead_letters(Queue::Samples, None, 10).await.unwrap();
    assert!(
        q.discard_dead_letter(Queue::Samples, &dead[0].id)
            .await
            .unwrap()
    );
    let again = requeue_lost_samples(&h.storage, age, 100).await.unwrap();
    assert_eq!((again.requeued, again.set_aside), (0, 0));
    assert_eq!(q.entries(Queue::Samples, None, 100).await.unwrap().len(), 2);

    // Recognised and decided by the filter, they are settled: nothing to
    // do, whatever the queue holds.
    let mut decided = vec![recognised.id.clone()];
    for d in q.read(Queue::Samples, "c", 10, WAIT).await.unwrap() {
        let s: SampleQueued = serde_json::from_slice(&d.payload).unwrap();
        let stored = docs.sample(&s.sample_id).await.unwrap().unwrap();
        docs.put_raw_result(&no_match(&stored)).await.unwrap();
        q.ack(Queue::Samples, &d.id).await.unwrap();
        decided.push(s.sample_id);
    }
    docs.delete_raw_results(&decided).await.unwrap();
    assert!(
        docs.unsettled_samples(OffsetDateTime::now_utc() - age, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let last = requeue_lost_samples(&h.storage, age, 100).await.unwrap();
    assert_eq!((last.requeued, last.set_aside), (0, 0));
    // The recent one is queued once it is old enough.
    let now = requeue_lost_samples(&h.storage, Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(now.requeued, 1);
    assert_eq!(
        queued_ids(&q.entries(Queue::Samples, None, 100).await.unwrap()),
        [recent.id.as_str()]
    );
}

/// Redis only: what the server loses in a restart without persistence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_lost_with_the_servers_data_is_created_again() {
    let h = Harness::new(Kind::Servers).await;
    let hendu_storage::StorageConfig::Servers(s) = &h.config else {
        unreachable!()
    };
    // Deletes every key of this test's prefix, as FLUSHALL or a restart
    // without persistence does (the server is shared with other tests).
    let flush = || async {
        hendu_storage::redis::RedisStore::connect(s.redis_url.expose(), &s.redis_prefix, s.queue)
            .await
            .unwrap()
            .delete_all()
            .await
            .unwrap();
    };
    let q = &h.storage.queue;
    q.push(Queue::Samples, b"before").await.unwrap();
    let held = q.read(Queue::Samples, "c", 10, WAIT).await.unwrap();
    assert_eq!(held.len(), 1);

    flush().await;
    // Acknowledging and holding what the server forgot is harmless.
    q.ack(Queue::Samples, &held[0].id).await.unwrap();
    q.push(Queue::Samples, b"after-1").await.unwrap();
    assert_eq!(
        q.backlog(Queue::Samples).await.unwrap(),
        Backlog {
            waiting: 1,
            pending: 0,
            dead: 0
        }
    );
    let got = q.read(Queue::Samples, "c", 10, WAIT).await.unwrap();
    assert_eq!(got.len(), 1, "pushed after the loss, delivered");
    assert_eq!(got[0].payload, b"after-1");
    assert!(!q.hold(Queue::Samples, "c", &held[0].id).await.unwrap());
    q.ack(Queue::Samples, &got[0].id).await.unwrap();

    // Lost while a reader blocks on the queue, then pushed to.
    flush().await;
    let storage = h.storage.clone();
    let reader = tokio::spawn(async move {
        storage
            .queue
            .read(Queue::Samples, "c", 10, Duration::from_secs(5))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    flush().await;
    q.push(Queue::Samples, b"after-3").await.unwrap();
    let got = reader.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"after-3");
    q.ack(Queue::Samples, &got[0].id).await.unwrap();

    // And the stream alone, group and all, gone between pushes.
    q.push(Queue::Samples, b"after-4").await.unwrap();
    flush().await;
    q.push(Queue::Samples, b"after-5").await.unwrap();
    let got = q.read(Queue::Samples, "c", 10, WAIT).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(),
        [b"after-5".to_vec()]
    );
}

/// MongoDB only (SQLite does the same in its migration 0005): samples stored
/// before samples were marked recognised are not taken for lost ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_stored_before_reconciliation_existed_count_as_recognised() {
    use hendu_storage::DocumentStore;
    use hendu_storage::mongo::MongoStore;

    let h = Harness::new(Kind::Servers).await;
    let hendu_storage::StorageConfig::Servers(s) = &h.config else {
        unreachable!()
    };
    let hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let old = sample(Source::Device(3), hour_ago);
    h.storage.documents.put_sample(&old).await.unwrap();
    // As an earlier version left it: no index of settled samples.
    let mongo = MongoStore::connect(s.mongo_url.expose(), 2).await.unwrap();
    mongo
        .database()
        .collection::<mongodb::bson::Document>("sample_fingerprints")
        .drop_index("settled")
        .await
        .unwrap();
    let upgraded = MongoStore::connect(s.mongo_url.expose(), 2).await.unwrap();
    let cutoff = OffsetDateTime::now_utc();
    assert!(
        upgraded
            .unsettled_samples(cutoff, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Stored since: unrecognised until recognised.
    let new = sample(Source::Device(3), hour_ago + time::Duration::seconds(30));
    upgraded.put_sample(&new).await.unwrap();
    let again = MongoStore::connect(s.mongo_url.expose(), 2).await.unwrap();
    assert_eq!(
        again.unsettled_samples(cutoff, 10).await.unwrap(),
        [(new.id.clone(), Source::Device(3))]
    );
}

/// The payloads of what `consumer` of `queue` reads now.
async fn read_all(
    storage: &Storage,
    queue: Queue,
    consumer: &str,
) -> Vec<hendu_storage::queue::Delivery> {
    storage
        .queue
        .read(queue, consumer, 100, WAIT)
        .await
        .unwrap()
}

fn payloads(got: &[hendu_storage::queue::Delivery]) -> Vec<String> {
    got.iter()
        .map(|d| String::from_utf8(d.payload.clone()).unwrap())
        .collect()
}

pub async fn every_shard_reads_every_entry_which_leaves_once_all_are_done(kind: Kind) {
    let h = Harness::new(kind).await;
    let q = &h.storage.queue;
    let shard = |k| Queue::samples(Shard::new(k, 3).unwrap());
    assert_eq!(Queue::samples(Shard::WHOLE), Queue::Samples);
    for i in 0..5 {
        q.push(Queue::Samples, format!("s{i}").as_bytes())
            .await
            .unwrap();
    }
    let all: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    let queued = || async { q.entries(Queue::Samples, None, 100).await.unwrap().len() };

    // The first shard finishes everything; the others have not started.
    let first = read_all(&h.storage, shard(1), "a").await;
    assert_eq!(payloads(&first), all);
    for d in &first {
        q.ack(shard(1), &d.id).await.unwrap();
    }
    assert_eq!(q.backlog(shard(1)).await.unwrap(), Backlog::default());
    assert_eq!(q.backlog(shard(2)).await.unwrap().waiting, 5);
    assert_eq!(queued().await, 5, "the other shards still need them");

    // A shard that starts later still gets them, and so does the third.
    let second = read_all(&h.storage, shard(2), "b").await;
    assert_eq!(payloads(&second), all);
    for d in &second {
        q.ack(shard(2), &d.id).await.unwrap();
    }
    let third = read_all(&h.storage, shard(3), "c").await;
    assert_eq!(payloads(&third), all);
    for d in &third[..4] {
        q.ack(shard(3), &d.id).await.unwrap();
    }
    assert_eq!(queued().await, 1, "the entry the third shard holds stays");
    assert_eq!(
        q.backlog(shard(3)).await.unwrap(),
        Backlog {
            waiting: 0,
            pending: 1,
            dead: 0
        }
    );
    assert!(
        read_all(&h.storage, shard(3), "d").await.is_empty(),
        "held within the timeout"
    );
    tokio::time::sleep(CLAIM_AFTER + Duration::from_millis(100)).await;
    let again = read_all(&h.storage, shard(3), "d").await;
    assert_eq!(payloads(&again), ["s4"]);
    assert!(again[0].redelivered);
    assert!(
        read_all(&h.storage, shard(1), "a").await.is_empty(),
        "no other shard gets it again"
    );
    q.ack(shard(3), &again[0].id).await.unwrap();
    assert_eq!(queued().await, 0);

    // One shard refusing an entry leaves it to the others.
    q.push(Queue::Samples, b"bad").await.unwrap();
    let refused = read_all(&h.storage, shard(2), "b").await;
    assert_eq!(payloads(&refused), ["bad"]);
    q.dead_letter(shard(2), &refused[0], "cannot")
        .await
        .unwrap();
    let dead = q.dead_letters(Queue::Samples, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, b"bad");
    for k in [1, 3] {
        let got = read_all(&h.storage, shard(k), "x").await;
        assert_eq!(payloads(&got), ["bad"], "shard {k}");
        assert_eq!(queued().await, 1);
        q.ack(shard(k), &got[0].id).await.unwrap();
    }
    assert_eq!(queued().await, 0);
}
