//! Musics, their fingerprints and binaries, across the stores.

use std::time::Duration;

use futures_util::StreamExt;
use hendu_fingerprint::Peak;
use hendu_storage::catalogue::join_blocks;
use hendu_storage::model::{ContentHash, MusicState, NewMusic};
use hendu_storage::{Event, StorageError, ValidationError};
use tokio::io::AsyncReadExt;

use crate::harness::{Harness, Kind};

crate::contract!(catalogue:
    the_same_audio_twice_is_one_music,
    a_music_round_trips_with_its_fingerprint_and_audio,
    deleting_a_music_removes_it_from_everything,
    a_deletion_cut_short_leaves_nothing_to_match,
    an_ingestion_cut_short_is_not_matched_and_is_completed_by_a_retry,
    concurrent_uploads_of_the_same_audio_make_one_music,
    bad_metadata_is_refused_before_the_database,
    replicas_starting_together_migrate_once,
);

/// A 4-minute track's worth of peaks: 24 a second, bins in the band.
fn peaks(seed: u32, seconds: u32) -> (Vec<Peak>, u32) {
    let frames = seconds * 1000 / 16;
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut out = Vec::new();
    let mut frame = 0;
    while frame < frames {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.push(Peak {
            frame,
            bin: (20 + state % 198) as f32,
        });
        frame += 1 + state % 4;
    }
    (out, frames)
}

fn new_music(seed: u32, seconds: u32) -> NewMusic {
    NewMusic::new(
        &format!("Track {seed}"),
        Some("Artist"),
        seconds * 1000,
        ContentHash::of(&seed.to_le_bytes()),
        &format!("catalogue/track{seed}.ogg"),
    )
    .unwrap()
}

fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

pub async fn the_same_audio_twice_is_one_music(kind: Kind) {
    let h = Harness::new(kind).await;
    let (p, frames) = peaks(1, 60);
    let first = h
        .storage
        .add_music(&new_music(1, 60), &p, frames, None)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.record.state, MusicState::Ready);
    assert_eq!(first.record.blocks, 3);
    let again = h
        .storage
        .add_music(&new_music(1, 60), &p, frames, None)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.record.id, first.record.id);
    assert_eq!(
        h.storage.all_musics(MusicState::Ready).await.unwrap().len(),
        1
    );
}

pub async fn a_music_round_trips_with_its_fingerprint_and_audio(kind: Kind) {
    let h = Harness::new(kind).await;
    let (p, frames) = peaks(2, 240);
    let bytes = audio(3 * 1024 * 1024 + 17);
    let music = h
        .storage
        .add_music(&new_music(2, 240), &p, frames, Some(Box::new(&bytes[..])))
        .await
        .unwrap()
        .record;
    assert_eq!(music.title, "Track 2");
    assert_eq!(music.artist.as_deref(), Some("Artist"));
    assert_eq!(music.duration_ms, 240_000);

    // 15 blocks of 30 s with 15 s overlap; each peak stored once.
    let blocks = h.storage.documents.blocks(music.id).await.unwrap();
    assert_eq!(blocks.len(), 15);
    assert_eq!(
        blocks.iter().map(|b| b.block).collect::<Vec<_>>(),
        (0..15).collect::<Vec<_>>()
    );
    let (back, back_frames) = join_blocks(&blocks).unwrap();
    assert_eq!(back, p);
    assert_eq!(back_frames, frames);

    let mut stored = Vec::new();
    h.storage
        .documents
        .binary(music.id)
        .await
        .unwrap()
        .expect("binary stored")
        .read_to_end(&mut stored)
        .await
        .unwrap();
    assert!(stored == bytes, "binary differs after the round trip");

    let loaded = h.storage.load_catalogue().await.unwrap().tracks;
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].music.id, music.id);
    assert_eq!(loaded[0].peaks, p);
    assert_eq!(loaded[0].frames, frames);
}

pub async fn deleting_a_music_removes_it_from_everything(kind: Kind) {
    let h = Harness::new(kind).await;
    let mut events = h.storage.events.subscribe().await.unwrap();
    let (p, frames) = peaks(3, 90);
    let keep = h
        .storage
        .add_music(&new_music(30, 90), &p, frames, None)
        .await
        .unwrap()
        .record;
    let gone = h
        .storage
        .add_music(&new_music(3, 90), &p, frames, Some(Box::new(&b"audio"[..])))
        .await
        .unwrap()
        .record;
    h.storage.delete_music(gone.id).await.unwrap();

    assert!(
        h.storage
            .documents
            .blocks(gone.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(h.storage.documents.binary(gone.id).await.unwrap().is_none());
    assert_eq!(
        h.storage
            .relational
            .music(gone.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        MusicState::Deleted
    );
    let loaded = h.storage.load_catalogue().await.unwrap().tracks;
    assert_eq!(
        loaded.iter().map(|t| t.music.id).collect::<Vec<_>>(),
        vec![keep.id]
    );
    assert!(matches!(
        h.storage.delete_music(gone.id).await,
        Err(StorageError::NotFound { .. })
    ));

    let seen: Vec<Event> =
        tokio::time::timeout(Duration::from_secs(5), events.by_ref().take(3).collect())
            .await
            .expect("three events within 5 s");
    assert_eq!(
        seen,
        vec![
            Event::MusicAdded { music_id: keep.id },
            Event::MusicAdded { music_id: gone.id },
            Event::MusicRemoved { music_id: gone.id },
        ]
    );

    // Uploading the same audio again restores it under the same id.
    let back = h
        .storage
        .add_music(&new_music(3, 90), &p, frames, None)
        .await
        .unwrap();
    assert!(back.created);
    assert_eq!(back.record.id, gone.id);
    assert_eq!(h.storage.load_catalogue().await.unwrap().tracks.len(), 2);
}

pub async fn a_deletion_cut_short_leaves_nothing_to_match(kind: Kind) {
    let h = Harness::new(kind).await;
    let (p, frames) = peaks(4, 60);
    let m = h
        .storage
        .add_music(&new_music(4, 60), &p, frames, None)
        .await
        .unwrap()
        .record;
    // The first step of a deletion, then a crash: blocks are still stored.
    assert!(
        h.storage
            .relational
            .set_music_state(m.id, MusicState::Ready, MusicState::Deleting)
            .await
            .unwrap()
    );
    assert!(h.storage.load_catalogue().await.unwrap().tracks.is_empty());
    assert_eq!(h.storage.documents.blocks(m.id).await.unwrap().len(), 3);

    assert_eq!(h.storage.finish_deletions().await.unwrap(), 1);
    assert!(h.storage.documents.blocks(m.id).await.unwrap().is_empty());
    assert_eq!(
        h.storage
            .relational
            .music(m.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        MusicState::Deleted
    );
}

pub async fn an_ingestion_cut_short_is_not_matched_and_is_completed_by_a_retry(kind: Kind) {
    let h = Harness::new(kind).await;
    let (p, frames) = peaks(5, 60);
    // The row and half the blocks, then a crash.
    let row = h
        .storage
        .relational
        .upsert_music(&new_music(5, 60))
        .await
        .unwrap()
        .record;
    let blocks = hendu_storage::catalogue::split_blocks(&row, &p, frames);
    h.storage.documents.put_blocks(&blocks[..1]).await.unwrap();
    assert!(h.storage.load_catalogue().await.unwrap().tracks.is_empty());

    let retried = h
        .storage
        .add_music(&new_music(5, 60), &p, frames, None)
        .await
        .unwrap();
    assert_eq!(retried.record.id, row.id);
    assert_eq!(retried.record.state, MusicState::Ready);
    let loaded = h.storage.load_catalogue().await.unwrap().tracks;
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].peaks, p);
}

pub async fn concurrent_uploads_of_the_same_audio_make_one_music(kind: Kind) {
    let h = Harness::new(kind).await;
    let (p, frames) = peaks(6, 45);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let storage = h.storage.clone();
            let p = p.clone();
            tokio::spawn(
                async move { storage.add_music(&new_music(6, 45), &p, frames, None).await },
            )
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().record.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one music for one audio: {ids:?}");
    let loaded = h.storage.load_catalogue().await.unwrap().tracks;
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].peaks, p);
}

pub async fn bad_metadata_is_refused_before_the_database(kind: Kind) {
    let h = Harness::new(kind).await;
    let e =
        NewMusic::new(&"x".repeat(300), None, 1000, ContentHash::of(b"y"), "y.ogg").unwrap_err();
    assert!(matches!(e, ValidationError::TooLong { field: "title", .. }));
    assert!(ContentHash::parse("not-a-hash").is_err());
    assert!(
        h.storage
            .all_musics(MusicState::Ready)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn replicas_starting_together_migrate_once(kind: Kind) {
    let place = crate::harness::Place::new(kind).await;
    let opened = futures_util::future::join_all(
        (0..4).map(|_| hendu_storage::Storage::connect(&place.config)),
    )
    .await;
    let stores: Vec<_> = opened
        .into_iter()
        .map(|s| s.expect("every replica starts"))
        .collect();
    let (p, frames) = peaks(8, 40);
    stores[0]
        .add_music(&new_music(8, 40), &p, frames, None)
        .await
        .unwrap();
    for s in &stores {
        assert_eq!(s.load_catalogue().await.unwrap().tracks.len(), 1);
    }
    for s in &stores {
        s.close().await;
    }
}
