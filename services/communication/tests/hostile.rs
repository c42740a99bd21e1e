//! Hostile samples against the running service: each is refused with its
//! code, the service keeps answering, and its memory stays bounded.
//!
//! One test in its own binary: the peak memory read from `/proc/self/status`
//! (`VmHWM`) is the whole process's (the service runs in it), so nothing
//! else may run beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use common::spawn_with;
use hendu_fingerprint::hostile::{
    dense_sample_fingerprint, huge_packet_caf, lying_wav, own_status_kb, random_bytes, silent_flac,
    wav,
};
use hendu_fingerprint::synth::music;
use hendu_fingerprint::wire::MEDIA_TYPE;

/// A field of `/proc/self/status`, in kB.
fn status_kb(key: &str) -> u64 {
    own_status_kb(key).unwrap()
}

/// Peak memory growth allowed over all the samples below, service and
/// client together: the largest body is 8 MB and is held a few times over
/// (the client's copy, the request body, the decoder's buffers). Without the
/// limits the CAF header alone asks for 32 GiB and aborts the process.
const MEMORY_BOUND_KB: u64 = 96 * 1024;

const AT: &str = "2026-11-24T21:30:00Z";

/// A hostile sample: what it is, its body, whether it is sent as a device
/// fingerprint (or as audio), and the statuses and codes it may get.
type Case = (&'static str, Vec<u8>, bool, &'static [(u16, &'static str)]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_samples_are_refused_with_their_code_and_the_service_stays_within_bounded_memory() {
    let app = spawn_with(10 << 20, 60.0).await;
    let secret = app.register().await;
    let baseline = status_kb("VmHWM:");
    let tone = wav(&music(7, 8.0, 11_025), 11_025);
    let half = tone[..tone.len() / 2].to_vec();
    let mut flipped = tone.clone();
    for b in flipped.iter_mut().skip(44).step_by(7) {
        *b = !*b;
    }
    let cases: Vec<Case> = vec![
        (
            "a 380 KB FLAC of 10 h of silence",
            silent_flac(10.0 * 3600.0, 44_100),
            false,
            &[(422, "audio_too_long")],
        ),
        (
            "a WAV header claiming 10 h over 1 s of audio",
            lying_wav(36_000.0, 1.0, 8000),
            false,
            &[(202, ""), (422, "unsupported_audio")],
        ),
        (
            "a CAF header claiming huge packets",
            huge_packet_caf(2),
            false,
            &[(422, "unsupported_audio"), (422, "too_many_channels")],
        ),
        (
            "8 MB of random bytes",
            random_bytes(3, 8 << 20),
            false,
            &[(422, "unsupported_audio")],
        ),
        (
            "half a WAV file",
            half,
            false,
            &[(202, ""), (422, "unsupported_audio")],
        ),
        (
            "a WAV file with every seventh byte flipped",
            flipped,
            false,
            &[(202, ""), (422, "unsupported_audio")],
        ),
        (
            "a fingerprint of 60 s at 5,000 peaks a second",
            dense_sample_fingerprint(60_000, 5_000, 64),
            true,
            &[(422, "invalid_fingerprint")],
        ),
    ];
    for (what, body, is_fingerprint, expected) in cases {
        let (status, v) = if is_fingerprint {
            app.sample(&secret, body, MEDIA_TYPE).await
        } else {
            app.audio_sample(&secret, body, AT).await
        };
        let code = v["error"]["code"].as_str().unwrap_or("");
        assert!(
            expected.contains(&(status, code)),
            "{what}: {status} {v}, expected one of {expected:?}"
        );
        if status != 202 {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{what}: a refusal says why: {v}"
            );
        }
        let health = app
            .http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "{what}: the service still answers");
    }
    // A well-formed sample after all of them is taken.
    let (status, v) = app.audio_sample(&secret, tone, AT).await;
    assert_eq!(status, 202, "{v}");
    let grown = status_kb("VmHWM:").saturating_sub(baseline);
    assert!(
        grown < MEMORY_BOUND_KB,
        "peak memory grew by {grown} kB (bound {MEMORY_BOUND_KB} kB)"
    );
    eprintln!("peak memory growth over the hostile samples: {grown} kB");
}
