//! Live events (fire and forget): every subscriber that is listening gets
//! each event; one that is not listening misses it. Nothing that must not be
//! lost travels here: that is what [`crate::queue`] is for.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{MusicId, PlayId, RadioId, Source};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A music became matchable.
    MusicAdded { music_id: MusicId },
    /// A music must no longer be matched.
    MusicRemoved { music_id: MusicId },
    /// The filter recorded a play.
    PlayRecognised {
        play_id: PlayId,
        music_id: MusicId,
        source: Source,
    },
    /// A station's stream has failed to connect for the down time.
    StationDown {
        radio_id: RadioId,
        /// Why, in words.
        reason: String,
    },
    /// A station's audio has been below the silence level for the silence time.
    StationSilent { radio_id: RadioId, silent_s: f64 },
    /// A station that was down or silent streams audio again.
    StationBack { radio_id: RadioId },
}

#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    async fn publish(&self, event: &Event) -> Result<()>;
    /// Events published from now on. The subscription is in place when this
    /// returns.
    async fn subscribe(&self) -> Result<BoxStream<'static, Event>>;
}
