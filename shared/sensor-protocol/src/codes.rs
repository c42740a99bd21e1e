//! The stable error codes of both protocol versions.
//!
//! A code has a number (sent in a v2 ERROR frame, and first in a v1 `ERR`
//! line) and a name (the same words the REST API uses, where it has them).
//! The hundreds say what the device should do:
//!
//! | range | meaning | the device |
//! | --- | --- | --- |
//! | 1xx | the session is refused or broken | the server closes the connection; fix the cause, reconnect (after `retry_after_s` when given) |
//! | 2xx | this sample is refused | the connection stays open; do not resend that sample unchanged |
//! | 3xx | the server cannot take it now | resend after `retry_after_s` (`shutting_down` closes: reconnect, another replica answers) |
//! | 4xx | a v1 ticket is refused | ask the control port for a new port |

/// Every refusal either protocol version can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Unknown device, disabled device, wrong credential: one answer.
    Refused,
    /// Too many failed logins for this device or this address.
    TooManyAttempts,
    /// The login was not completed within the deadline.
    LoginTimeout,
    /// Nothing arrived within the idle timeout (send PING).
    IdleTimeout,
    /// A frame (or a v1 line) longer than the server's maximum.
    FrameTooLarge,
    /// A frame whose CRC-32 does not match its bytes.
    BadChecksum,
    /// A sequence number beyond the next one expected.
    OutOfOrder,
    /// A sequence number already used, with a different frame.
    DuplicateSequence,
    /// A frame type not allowed in this state (a sample before login).
    UnexpectedFrame,
    /// A frame or line whose fields do not parse.
    MalformedFrame,
    /// A protocol version this server does not speak.
    UnsupportedVersion,
    /// A frame or line stopped arriving part-way (slow link, stalled client).
    ReadTimeout,

    InvalidFingerprint,
    UnsupportedAudio,
    AudioTooLong,
    SampleRateTooHigh,
    TooManyChannels,
    CaptureTimeInFuture,
    CaptureTimeTooEarly,
    FingerprintTooLarge,
    PayloadTooLarge,
    EmptySample,
    InvalidSample,

    Busy,
    ShuttingDown,
    PortsExhausted,
    Unavailable,
    Internal,

    TicketInvalid,
    TicketUsed,
    TicketExpired,
    TicketWrongAddress,
}

const ALL: &[(Code, u16, &str)] = &[
    (Code::Refused, 100, "refused"),
    (Code::TooManyAttempts, 101, "too_many_attempts"),
    (Code::LoginTimeout, 102, "login_timeout"),
    (Code::IdleTimeout, 103, "idle_timeout"),
    (Code::FrameTooLarge, 104, "frame_too_large"),
    (Code::BadChecksum, 105, "bad_checksum"),
    (Code::OutOfOrder, 106, "out_of_order"),
    (Code::DuplicateSequence, 107, "duplicate_sequence"),
    (Code::UnexpectedFrame, 108, "unexpected_frame"),
    (Code::MalformedFrame, 109, "malformed_frame"),
    (Code::UnsupportedVersion, 110, "unsupported_version"),
    (Code::ReadTimeout, 111, "read_timeout"),
    (Code::InvalidFingerprint, 200, "invalid_fingerprint"),
    (Code::UnsupportedAudio, 201, "unsupported_audio"),
    (Code::AudioTooLong, 202, "audio_too_long"),
    (Code::SampleRateTooHigh, 203, "sample_rate_too_high"),
    (Code::TooManyChannels, 204, "too_many_channels"),
    (Code::CaptureTimeInFuture, 205, "capture_time_in_future"),
    (Code::CaptureTimeTooEarly, 206, "capture_time_too_early"),
    (Code::FingerprintTooLarge, 207, "fingerprint_too_large"),
    (Code::PayloadTooLarge, 208, "payload_too_large"),
    (Code::EmptySample, 209, "empty_body"),
    (Code::InvalidSample, 210, "invalid_sample"),
    (Code::Busy, 300, "busy"),
    (Code::ShuttingDown, 301, "shutting_down"),
    (Code::PortsExhausted, 302, "ports_exhausted"),
    (Code::Unavailable, 303, "unavailable"),
    (Code::Internal, 304, "internal"),
    (Code::TicketInvalid, 400, "ticket_invalid"),
    (Code::TicketUsed, 401, "ticket_used"),
    (Code::TicketExpired, 402, "ticket_expired"),
    (Code::TicketWrongAddress, 403, "ticket_wrong_address"),
];

impl Code {
    /// Every code, in number order (for the specification's table).
    pub fn all() -> impl Iterator<Item = Self> {
        ALL.iter().map(|(c, _, _)| *c)
    }

    fn entry(self) -> &'static (Code, u16, &'static str) {
        ALL.iter()
            .find(|(c, _, _)| *c == self)
            .unwrap_or(&ALL[ALL.len() - 1])
    }

    pub fn number(self) -> u16 {
        self.entry().1
    }

    pub fn name(self) -> &'static str {
        self.entry().2
    }

    pub fn from_number(n: u16) -> Option<Self> {
        ALL.iter().find(|(_, m, _)| *m == n).map(|(c, _, _)| *c)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter().find(|(_, _, s)| *s == name).map(|(c, _, _)| *c)
    }

    /// Whether the server closes the connection after sending it (v2): a
    /// session error, a ticket error, or shutting down. A refused sample or
    /// a busy server leaves the connection open.
    pub fn closes(self) -> bool {
        let n = self.number();
        (100..200).contains(&n) || (400..500).contains(&n) || self == Self::ShuttingDown
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.number(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for code in Code::all() {
            assert!(numbers.insert(code.number()), "{code}");
            assert!(names.insert(code.name()), "{code}");
            assert_eq!(Code::from_number(code.number()), Some(code));
            assert_eq!(Code::from_name(code.name()), Some(code));
        }
        assert!(Code::Refused.closes());
        assert!(!Code::InvalidFingerprint.closes());
        assert!(!Code::Busy.closes());
        assert!(Code::ShuttingDown.closes());
        assert_eq!(Code::from_number(999), None);
    }
}
