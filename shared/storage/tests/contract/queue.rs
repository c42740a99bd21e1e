//! The work queue: shared by consumers, at least once, crash-proof.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hendu_storage::queue::{Backlog, Queue};
use hendu_storage::{Event, Storage};

use crate::harness::{CLAIM_AFTER, Harness, Kind};

crate::contract!(queue:
    entries_are_shared_between_consumers_and_acknowledged_once,
    an_unacknowledged_entry_goes_to_another_consumer_after_the_timeout,
    an_entry_read_by_a_killed_consumer_is_processed_by_another,
    a_blocked_reader_wakes_for_a_push,
    events_reach_every_subscriber,
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
            pending: 0
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
            pending: 0
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
            pending: 1
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
