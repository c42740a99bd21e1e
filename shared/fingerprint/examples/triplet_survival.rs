//! Scratch: how many catalogue peaks and triplets survive in a warped query.
use hendu_fingerprint::triplets::{catalogue_triplets, query_triplets};
use hendu_fingerprint::{Peak, PeakProfile, fingerprint_clip, fingerprint_clip_sparse, read_clip};
use std::path::Path;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let track = read_clip(Path::new(&a[1]), 3600.0).unwrap();
    let start: f64 = a[3].parse().unwrap();
    let time: f32 = a[4].parse().unwrap();
    let freq: f32 = a[5].parse().unwrap();
    let query = read_clip(Path::new(&a[2]), 60.0).unwrap();
    let cat: Vec<Peak> = fingerprint_clip(&track, PeakProfile::CATALOGUE)
        .into_iter()
        .filter(|p| p.bin < 218.0)
        .collect();
    let (_, sparse) = fingerprint_clip_sparse(&query);
    let f0 = (start / 0.016) as u32;
    let len = (sparse.last().unwrap().frame as f32 * time) as u32;
    let seg: Vec<Peak> = cat
        .iter()
        .filter(|p| p.frame >= f0 + 70 && p.frame < f0 + len - 70)
        .map(|p| Peak { frame: p.frame - f0, bin: p.bin })
        .collect();
    let found = seg
        .iter()
        .filter(|c| {
            sparse.iter().any(|q| {
                ((q.frame as f32 * time) - c.frame as f32).abs() <= 1.5
                    && (q.bin / freq - c.bin).abs() <= 1.0
            })
        })
        .count();
    let (mut ct, mut qt) = (Vec::new(), Vec::new());
    catalogue_triplets(&seg, &mut ct);
    query_triplets(&sparse, &mut qt);
    let qh: std::collections::HashSet<u32> = qt.iter().map(|t| t.hash).collect();
    let kept = ct.iter().filter(|t| qh.contains(&t.hash)).count();
    println!(
        "catalogue peaks {} found in sparse query {} ({:.0}%); query sparse {}; triplets kept {}/{} ({:.0}%)",
        seg.len(), found, 100.0 * found as f64 / seg.len() as f64, sparse.len(), kept, ct.len(),
        100.0 * kept as f64 / ct.len().max(1) as f64
    );
}
