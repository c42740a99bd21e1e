//! What people ask of the plays (the web pages, the reports, the JSON API):
//! the plays a viewer may see, filtered, sorted and paged, and their totals
//! by day, source, location and track; and the browser sessions they sign
//! in with.
//!
//! One SQL text serves both databases ([`PlaySql`]); only what the two
//! spell differently (a time bound as a value, a play's length, a day in a
//! time zone) comes from the [`Dialect`].

use time::OffsetDateTime;

use crate::error::Result;
use crate::model::{MusicId, Play, PlayId, Role, Source, UserId};

/// Which plays a viewer may see: the scope is part of every query, so a
/// page cannot forget it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayScope {
    /// An administrator: every play.
    Everything,
    /// A musician: plays of the tracks they own.
    OwnedBy(UserId),
    /// An operator: plays heard on the stations and devices (events)
    /// assigned to them.
    OperatedBy(UserId),
}

impl PlayScope {
    /// What a person with `role` may see.
    pub fn of(user: UserId, role: Role) -> Self {
        match role {
            Role::Admin => Self::Everything,
            Role::Musician => Self::OwnedBy(user),
            Role::Operator => Self::OperatedBy(user),
        }
    }

    /// Whether a viewer with this scope may see `row` (the same rule as
    /// the queries', for plays that arrive live).
    pub fn admits(self, row: &PlayRow) -> bool {
        match self {
            Self::Everything => true,
            Self::OwnedBy(user) => row.owner == Some(user),
            Self::OperatedBy(user) => row.operator == Some(user),
        }
    }
}

/// Which plays, within a scope. Unset fields do not filter.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayFilter {
    pub scope: PlayScope,
    pub play: Option<PlayId>,
    pub music: Option<MusicId>,
    pub source: Option<Source>,
    /// Exactly this location.
    pub location: Option<String>,
    /// Plays that started at or after this.
    pub from: Option<OffsetDateTime>,
    /// Plays that started before this.
    pub to: Option<OffsetDateTime>,
    /// Plays recorded after this one (a live page catching up).
    pub after: Option<PlayId>,
}

impl PlayFilter {
    /// Every play in `scope`.
    pub fn scoped(scope: PlayScope) -> Self {
        Self {
            scope,
            play: None,
            music: None,
            source: None,
            location: None,
            from: None,
            to: None,
            after: None,
        }
    }
}

/// The column a list of plays is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayOrder {
    Started,
    Track,
    Source,
    Location,
    Duration,
    /// Order of recording (ids): what a live page follows.
    Recorded,
}

/// One page of a sorted list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayPage {
    pub order: PlayOrder,
    pub descending: bool,
    pub offset: u32,
    pub limit: u32,
}

/// A play with what a person needs to read it: the track and the source by name.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayRow {
    pub play: Play,
    pub title: String,
    pub artist: Option<String>,
    pub isrc: Option<String>,
    /// The track's owner.
    pub owner: Option<UserId>,
    /// The operator of the station or device it was heard on.
    pub operator: Option<UserId>,
    /// The station's or the device's name.
    pub source_name: String,
}

/// How totals are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Calendar days in the viewer's time zone, as `YYYY-MM-DD`, in order.
    Day,
    /// Sources, most plays first.
    Source,
    /// Locations (an empty key for plays without one), most plays first.
    Location,
    /// Tracks, most plays first.
    Track,
}

/// The plays of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayTotal {
    /// `2026-12-04`, `radio:3`, the location, or the music id.
    pub key: String,
    /// What a person reads: the day, the source's or track's name, the location.
    pub label: String,
    pub plays: u64,
    /// Time played, summed.
    pub seconds: f64,
    /// Of a track (grouped by track): its artist and ISRC.
    pub artist: Option<String>,
    pub isrc: Option<String>,
}

/// A signed-in browser. The cookie holds a secret; the store holds only its
/// keyed digest, so a copy of the table signs no one in.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSession {
    pub digest: String,
    pub user_id: UserId,
    /// The token every form of this session must carry.
    pub csrf: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What the two SQL databases spell differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    MySql,
    Sqlite,
}

impl Dialect {
    /// A play's length in milliseconds.
    fn millis(self) -> &'static str {
        match self {
            Self::MySql => "(TIMESTAMPDIFF(MICROSECOND, p.started_at, p.ended_at) DIV 1000)",
            Self::Sqlite => "(p.ended_at - p.started_at)",
        }
    }

    /// The sum of [`Self::millis`], as an integer.
    fn sum_millis(self) -> String {
        match self {
            Self::MySql => format!("CAST(SUM({}) AS SIGNED)", self.millis()),
            Self::Sqlite => format!("SUM({})", self.millis()),
        }
    }

    /// A play's start as `YYYY-MM-DD`, shifted by a bound number of seconds.
    fn day(self) -> &'static str {
        match self {
            Self::MySql => "DATE_FORMAT(p.started_at + INTERVAL ? SECOND, '%Y-%m-%d')",
            Self::Sqlite => "strftime('%Y-%m-%d', p.started_at / 1000 + ?, 'unixepoch')",
        }
    }
}

/// A value to bind, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    Time(OffsetDateTime),
}

/// A statement and its values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlaySql {
    pub sql: String,
    pub args: Vec<Arg>,
}

const FROM: &str = " FROM results p JOIN musics m ON m.id = p.music_id \
     LEFT JOIN radios r ON r.id = p.radio_id LEFT JOIN devices d ON d.id = p.device_id";

/// The tables a query of plays reads: `results` and only the joins that
/// its scope, its grouping or its columns need (a join read for nothing
/// costs a lookup per play, which a million plays feel).
fn from(scope: PlayScope, tracks: bool, sources: bool) -> String {
    let mut sql = String::from(" FROM results p");
    if tracks || matches!(scope, PlayScope::OwnedBy(_)) {
        sql.push_str(" JOIN musics m ON m.id = p.music_id");
    }
    // An operator's sources: the stations and the devices (events) that
    // are theirs.
    if sources || matches!(scope, PlayScope::OperatedBy(_)) {
        sql.push_str(" LEFT JOIN radios r ON r.id = p.radio_id");
        sql.push_str(" LEFT JOIN devices d ON d.id = p.device_id");
    }
    sql
}

const ROW_COLUMNS: &str = "SELECT p.*, m.title AS music_title, m.artist AS music_artist, \
     m.owner_id AS music_owner, m.isrc AS music_isrc, \
     COALESCE(r.owner_id, d.owner_id) AS source_operator, \
     COALESCE(r.name, d.name, '') AS source_name";

/// `WHERE ...` for `filter`, with its values appended to `args`.
fn conditions(filter: &PlayFilter, args: &mut Vec<Arg>) -> String {
    let mut all = Vec::new();
    match filter.scope {
        PlayScope::Everything => {}
        PlayScope::OwnedBy(user) => {
            all.push("m.owner_id = ?");
            args.push(Arg::Int(user));
        }
        PlayScope::OperatedBy(user) => {
            all.push("(r.owner_id = ? OR d.owner_id = ?)");
            args.push(Arg::Int(user));
            args.push(Arg::Int(user));
        }
    }
    if let Some(id) = filter.play {
        all.push("p.id = ?");
        args.push(Arg::Int(id));
    }
    if let Some(id) = filter.music {
        all.push("p.music_id = ?");
        args.push(Arg::Int(id));
    }
    match filter.source {
        Some(Source::Radio(id)) => {
            all.push("p.radio_id = ?");
            args.push(Arg::Int(id));
        }
        Some(Source::Device(id)) => {
            all.push("p.device_id = ?");
            args.push(Arg::Int(id));
        }
        None => {}
    }
    if let Some(location) = &filter.location {
        all.push("p.location = ?");
        args.push(Arg::Text(location.clone()));
    }
    if let Some(from) = filter.from {
        all.push("p.started_at >= ?");
        args.push(Arg::Time(from));
    }
    if let Some(to) = filter.to {
        all.push("p.started_at < ?");
        args.push(Arg::Time(to));
    }
    if let Some(after) = filter.after {
        all.push("p.id > ?");
        args.push(Arg::Int(after));
    }
    if all.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", all.join(" AND "))
    }
}

impl PlaySql {
    /// One page of the plays `filter` selects.
    pub(crate) fn page(dialect: Dialect, filter: &PlayFilter, page: PlayPage) -> Self {
        let mut args = Vec::new();
        let wh = conditions(filter, &mut args);
        let dir = if page.descending { "DESC" } else { "ASC" };
        let order = match page.order {
            PlayOrder::Started => format!("p.started_at {dir}, p.id {dir}"),
            PlayOrder::Track => format!("m.title {dir}, p.started_at DESC, p.id DESC"),
            PlayOrder::Source => format!("source_name {dir}, p.started_at DESC, p.id DESC"),
            PlayOrder::Location => format!("p.location {dir}, p.started_at DESC, p.id DESC"),
            PlayOrder::Duration => {
                format!("{} {dir}, p.started_at DESC, p.id DESC", dialect.millis())
            }
            PlayOrder::Recorded => format!("p.id {dir}"),
        };
        args.push(Arg::Int(i64::from(page.limit)));
        args.push(Arg::Int(i64::from(page.offset)));
        // MySQL would rather read `musics` first and sort every joined play
        // to find the first page (33 s for a page of a million plays);
        // reading the plays first, in the order's index, takes milliseconds.
        let columns = match dialect {
            Dialect::MySql => ROW_COLUMNS.replacen("SELECT ", "SELECT STRAIGHT_JOIN ", 1),
            Dialect::Sqlite => ROW_COLUMNS.to_owned(),
        };
        Self {
            sql: format!("{columns}{FROM}{wh} ORDER BY {order} LIMIT ? OFFSET ?"),
            args,
        }
    }

    /// How many plays `filter` selects (column `n`).
    pub(crate) fn count(filter: &PlayFilter) -> Self {
        let mut args = Vec::new();
        let wh = conditions(filter, &mut args);
        Self {
            sql: format!(
                "SELECT COUNT(*) AS n{}{wh}",
                from(filter.scope, false, false)
            ),
            args,
        }
    }

    /// Totals of what `filter` selects, grouped; days shifted by
    /// `utc_offset_s`; at most `limit` groups (days: the first ones).
    pub(crate) fn totals(
        dialect: Dialect,
        filter: &PlayFilter,
        by: Grouping,
        utc_offset_s: i32,
        limit: u32,
    ) -> Self {
        let mut args = Vec::new();
        let sums = format!("COUNT(*) AS plays, {} AS millis", dialect.sum_millis());
        let (select, group, order) = match by {
            Grouping::Day => {
                args.push(Arg::Int(i64::from(utc_offset_s)));
                (
                    format!("SELECT {} AS k, '' AS label, {sums}", dialect.day()),
                    "1",
                    "1",
                )
            }
            Grouping::Source => (
                format!(
                    "SELECT p.source_kind AS kind, COALESCE(p.radio_id, p.device_id) AS k, \
                     MAX(COALESCE(r.name, d.name, '')) AS label, {sums}"
                ),
                "p.source_kind, COALESCE(p.radio_id, p.device_id)",
                "plays DESC, label",
            ),
            Grouping::Location => (
                format!("SELECT COALESCE(p.location, '') AS k, '' AS label, {sums}"),
                "COALESCE(p.location, '')",
                "plays DESC, k",
            ),
            Grouping::Track => (
                format!(
                    "SELECT p.music_id AS k, MAX(m.title) AS label, MAX(m.artist) AS artist, \
                     MAX(m.isrc) AS isrc, {sums}"
                ),
                "p.music_id",
                "plays DESC, label",
            ),
        };
        let wh = conditions(filter, &mut args);
        args.push(Arg::Int(i64::from(limit)));
        let tables = from(filter.scope, by == Grouping::Track, by == Grouping::Source);
        Self {
            sql: format!("{select}{tables}{wh} GROUP BY {group} ORDER BY {order} LIMIT ?"),
            args,
        }
    }
}

/// What an administrator decided about a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeState {
    Open,
    /// The play was wrong.
    Upheld,
    Rejected,
}

impl DisputeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Upheld => "upheld",
            Self::Rejected => "rejected",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "open" => Ok(Self::Open),
            "upheld" => Ok(Self::Upheld),
            "rejected" => Ok(Self::Rejected),
            other => Err(crate::StorageError::corrupt(format!(
                "dispute state {other:?}"
            ))),
        }
    }
}

/// A musician's reason to think a play is wrong.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Dispute {
    pub id: i64,
    pub play_id: PlayId,
    pub user_id: UserId,
    pub reason: String,
    pub state: DisputeState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
}
