//! The catalogue's 30-second blocks (HENDU paper, section 4.1).
//!
//! A track of duration D is seen as blocks of [`BLOCK_SECONDS`] starting every
//! [`BLOCK_STEP_SECONDS`]; the filter counts how many of a track's blocks a
//! source played. The hashes themselves are computed once over the whole
//! track: a block is a window onto them, not a second copy.

/// Length of a block.
pub const BLOCK_SECONDS: f64 = 30.0;
/// Start-to-start distance of consecutive blocks (15 s overlap).
pub const BLOCK_STEP_SECONDS: f64 = 15.0;

/// Number of blocks of a track lasting `duration_s` (at least one).
pub fn block_count(duration_s: f64) -> u32 {
    if duration_s <= BLOCK_SECONDS {
        1
    } else {
        ((duration_s - BLOCK_SECONDS) / BLOCK_STEP_SECONDS).ceil() as u32 + 1
    }
}

/// Start and end (seconds) of block `index` of a track lasting `duration_s`.
pub fn block_span(index: u32, duration_s: f64) -> (f64, f64) {
    let start = f64::from(index) * BLOCK_STEP_SECONDS;
    (start, (start + BLOCK_SECONDS).min(duration_s.max(start)))
}

/// The block that best contains the stretch `[start_s, end_s]` of a track:
/// the one whose centre is nearest the stretch's centre.
pub fn block_of(start_s: f64, end_s: f64, duration_s: f64) -> u32 {
    let centre = (start_s + end_s) / 2.0;
    let raw = ((centre - BLOCK_SECONDS / 2.0) / BLOCK_STEP_SECONDS).round();
    let last = block_count(duration_s) - 1;
    (raw.max(0.0) as u32).min(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_track_with_fifteen_seconds_of_overlap() {
        assert_eq!(block_count(10.0), 1);
        assert_eq!(block_count(30.0), 1);
        assert_eq!(block_count(31.0), 2);
        assert_eq!(block_count(240.0), 15);
        assert_eq!(block_span(1, 240.0), (15.0, 45.0));
        assert_eq!(block_span(14, 240.0), (210.0, 240.0));
    }

    #[test]
    fn a_stretch_is_named_by_the_block_centred_on_it() {
        assert_eq!(block_of(0.0, 10.0, 240.0), 0);
        assert_eq!(block_of(20.0, 30.0, 240.0), 1);
        assert_eq!(block_of(230.0, 240.0, 240.0), 14);
        assert_eq!(block_of(500.0, 510.0, 240.0), 14);
    }
}
