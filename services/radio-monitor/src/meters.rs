//! The monitor's metrics, per station this replica listens to (a station's
//! series go when it leaves the replica, so cardinality stays bounded).

use std::sync::atomic::AtomicU64;

use hendu_service::Metrics;
use hendu_storage::model::{RadioId, StationState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StationLabels {
    pub radio: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub radio: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Meters {
    state: Family<StateLabels, Gauge>,
    bytes: Family<StationLabels, Counter>,
    reconnects: Family<StationLabels, Counter>,
    samples: Family<StationLabels, Counter>,
    skipped: Family<StationLabels, Counter>,
    last_sample: Family<StationLabels, Gauge<f64, AtomicU64>>,
    silence: Family<StationLabels, Gauge<f64, AtomicU64>>,
    pub held: Gauge,
    pub handovers: Counter,
}

/// One station's series, looked up once (a stream's chunks count bytes
/// many times a second).
#[derive(Clone, Debug)]
pub struct StationMeters {
    pub bytes: Counter,
    pub reconnects: Counter,
    pub samples: Counter,
    pub skipped: Counter,
    pub last_sample: Gauge<f64, AtomicU64>,
    pub silence: Gauge<f64, AtomicU64>,
}

pub fn labels(radio: RadioId) -> StationLabels {
    StationLabels {
        radio: radio.to_string(),
    }
}

impl Meters {
    pub fn new(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "radio_station_state",
            "1 for the state each station this replica listens to is in",
            m.state.clone(),
        );
        metrics.register("radio_stream_bytes", "Stream bytes read", m.bytes.clone());
        metrics.register(
            "radio_reconnects",
            "Connections a station needed after its first",
            m.reconnects.clone(),
        );
        metrics.register(
            "radio_samples",
            "Samples stored and queued",
            m.samples.clone(),
        );
        metrics.register(
            "radio_skipped_packets",
            "Corrupt packets the decoder skipped",
            m.skipped.clone(),
        );
        metrics.register(
            "radio_last_sample_timestamp_seconds",
            "Capture instant of the station's last stored sample (Unix seconds)",
            m.last_sample.clone(),
        );
        metrics.register(
            "radio_silence_seconds",
            "How long the station's audio has been below the silence level",
            m.silence.clone(),
        );
        metrics.register(
            "radio_stations_held",
            "Stations this replica listens to",
            m.held.clone(),
        );
        metrics.register(
            "radio_handovers",
            "Stations this replica handed to a replica that joined",
            m.handovers.clone(),
        );
        m
    }

    /// A station's series (created now if they do not exist).
    pub fn station(&self, radio: RadioId) -> StationMeters {
        let l = labels(radio);
        StationMeters {
            bytes: self.bytes.get_or_create(&l).clone(),
            reconnects: self.reconnects.get_or_create(&l).clone(),
            samples: self.samples.get_or_create(&l).clone(),
            skipped: self.skipped.get_or_create(&l).clone(),
            last_sample: self.last_sample.get_or_create(&l).clone(),
            silence: self.silence.get_or_create(&l).clone(),
        }
    }

    pub fn set_state(&self, radio: RadioId, state: StationState) {
        for s in StationState::ALL {
            self.state
                .get_or_create(&StateLabels {
                    radio: radio.to_string(),
                    state: s.as_str(),
                })
                .set(i64::from(s == state));
        }
    }

    /// Drops a station's series (it left this replica).
    pub fn forget(&self, radio: RadioId) {
        for s in StationState::ALL {
            self.state.remove(&StateLabels {
                radio: radio.to_string(),
                state: s.as_str(),
            });
        }
        let l = labels(radio);
        for f in [&self.bytes, &self.reconnects, &self.samples, &self.skipped] {
            f.remove(&l);
        }
        self.last_sample.remove(&l);
        self.silence.remove(&l);
    }
}
