//! Folding a batch of events into at most one row per exposure key.
//!
//! The current state of a key is a function of its stored events alone.
//! Events are ordered by `(timestamp, event_id)`: the instant at
//! microsecond precision, then the id compared byte-wise (UTF-8, which is
//! how Rust, DuckDB and PostgreSQL's `"C"` collation compare text). Then
//!
//! - `first_seen` is the earliest timestamp, `last_seen` the latest;
//! - `exposure_class`, `asset_id`, `status`, `severity`, `event_action` and
//!   `risk_score` are those of the greatest event (its id is kept as
//!   `last_event_id`);
//! - each optional detail is its value in the greatest event in which it is
//!   not NULL, kept with that event's timestamp and id (its provenance).
//!
//! Every part is a maximum (or minimum) over the events, so the fold of a
//! union of batches is the merge of their folds, in any order and any
//! grouping, and merging a batch twice changes nothing. That is what the
//! upsert (`statements::upsert_current`) does with a stored row and a
//! folded one, and why neither arrival order, nor the split into files and
//! chunks, nor concurrent writers change the result.
//!
//! DuckDB keeps only the FIRST row when one `INSERT ... ON CONFLICT DO
//! UPDATE` proposes the same key twice, silently; folding a whole ingest
//! call first also keeps to one row per key per statement (and writes each
//! key once per call).

use std::collections::HashMap;
use std::sync::Arc;

use crate::entity::{EventAction, Severity, Status};
use crate::event::ExposureEvent;

/// Where a value comes from: the `(timestamp, event_id)` of its event, in
/// the order of the rule (the derived `Ord` compares the timestamp first,
/// then the id byte-wise).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Provenance {
    /// Microseconds since the epoch.
    pub(crate) at: i64,
    /// Shared by every value taken from the same event.
    pub(crate) event_id: Arc<str>,
}

/// A detail's value with its provenance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sourced<T> {
    pub(crate) value: T,
    pub(crate) from: Provenance,
}

macro_rules! details {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// The optional details of an exposure, each from the greatest event
        /// in which it is not NULL.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub(crate) struct Details {
            $(pub(crate) $field: Option<Sourced<$ty>>,)*
        }

        impl Details {
            /// Takes (moves out of `e`) each non-NULL detail whose
            /// provenance `from` is greater than the one held.
            fn take_greater(&mut self, e: &mut ExposureEvent, from: &Provenance) {
                $(if let Some(value) = e.$field.take() {
                    if self.$field.as_ref().is_none_or(|held| *from > held.from) {
                        self.$field = Some(Sourced { value, from: from.clone() });
                    }
                })*
            }
        }
    };
}

details! {
    hostname: String,
    asset_ip: String,
    dst_ip: String,
    dst_port: i32,
    protocol: String,
    service_name: String,
    service_product: String,
    service_version: String,
}

/// The fold of one key's events.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Folded {
    pub(crate) office_id: String,
    pub(crate) exposure_id: String,
    pub(crate) exposure_class: String,
    pub(crate) asset_id: String,
    pub(crate) status: Status,
    pub(crate) severity: Severity,
    pub(crate) event_action: EventAction,
    pub(crate) risk_score: f64,
    /// Earliest timestamp, in microseconds.
    pub(crate) first_seen: i64,
    /// The greatest event: `last_seen` and `last_event_id`.
    pub(crate) last: Provenance,
    pub(crate) details: Details,
}

impl Folded {
    fn of(mut e: ExposureEvent, from: Provenance) -> Self {
        let mut details = Details::default();
        details.take_greater(&mut e, &from);
        Self {
            office_id: e.office_id,
            exposure_id: e.exposure_id,
            exposure_class: e.exposure_class,
            asset_id: e.asset_id,
            status: e.status,
            severity: e.severity,
            event_action: e.event_action,
            risk_score: e.risk_score,
            first_seen: from.at,
            last: from,
            details,
        }
    }

    fn add(&mut self, mut e: ExposureEvent, from: Provenance) {
        self.first_seen = self.first_seen.min(from.at);
        self.details.take_greater(&mut e, &from);
        if from > self.last {
            self.exposure_class = e.exposure_class;
            self.asset_id = e.asset_id;
            self.status = e.status;
            self.severity = e.severity;
            self.event_action = e.event_action;
            self.risk_score = e.risk_score;
            self.last = from;
        }
    }
}

/// A fast hash for the fold's keys (office and exposure ids come from the
/// input files, but a fold lives for one ingest call in one process).
type Fast = foldhash::fast::RandomState;

/// The fold of one ingest call, fed event by event (in any order).
#[derive(Debug, Default)]
pub(crate) struct Folder {
    /// office id -> exposure id -> position in `folds` (offices are few, so
    /// lookups by `&str` need no key allocation).
    index: HashMap<String, HashMap<String, usize, Fast>, Fast>,
    folds: Vec<Folded>,
}

impl Folder {
    /// Folds the next event, moving the values it keeps out of it.
    pub(crate) fn push(&mut self, e: ExposureEvent) {
        let from = Provenance {
            at: e.timestamp_micros(),
            event_id: Arc::from(e.event_id.as_str()),
        };
        let slot = self
            .index
            .get(&e.office_id)
            .and_then(|exposures| exposures.get(&e.exposure_id));
        match slot {
            Some(&slot) => self.folds[slot].add(e, from),
            None => {
                self.index
                    .entry(e.office_id.clone())
                    .or_default()
                    .insert(e.exposure_id.clone(), self.folds.len());
                self.folds.push(Folded::of(e, from));
            }
        }
    }

    /// One row per key, in order of first appearance.
    pub(crate) fn finish(self) -> Vec<Folded> {
        self.folds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn ev(id: &str, secs: i64, host: Option<&str>, status: Status) -> ExposureEvent {
        ExposureEvent {
            event_id: id.to_owned(),
            timestamp: Utc.timestamp_opt(secs, 0).single().unwrap_or_default(),
            office_id: "o".to_owned(),
            asset_id: "a".to_owned(),
            exposure_id: "x".to_owned(),
            exposure_class: "c".to_owned(),
            event_action: EventAction::Updated,
            status,
            severity: Severity::Low,
            risk_score: 1.0,
            hostname: host.map(str::to_owned),
            asset_ip: None,
            dst_ip: None,
            dst_port: None,
            protocol: None,
            service_name: None,
            service_product: None,
            service_version: None,
            scan_run_id: None,
            raw_payload_json: None,
        }
    }

    fn fold(events: &[ExposureEvent]) -> Vec<Folded> {
        let mut folder = Folder::default();
        for e in events {
            folder.push(e.clone());
        }
        folder.finish()
    }

    fn hostname(f: &Folded) -> Option<(&str, &str)> {
        f.details
            .hostname
            .as_ref()
            .map(|h| (h.value.as_str(), &*h.from.event_id))
    }

    #[test]
    fn the_greatest_event_wins_and_each_detail_comes_from_the_greatest_that_has_it() {
        let events = [
            ev("1", 10, Some("h1"), Status::Open),
            ev("2", 30, None, Status::Closed),
            ev("3", 20, Some("h3"), Status::Open), // late: still greater than 1
        ];
        let f = &fold(&events)[0];
        assert_eq!((f.first_seen, f.last.at), (10_000_000, 30_000_000));
        assert_eq!((f.status, &*f.last.event_id), (Status::Closed, "2"));
        assert_eq!(hostname(f), Some(("h3", "3")));
    }

    #[test]
    fn any_order_folds_to_the_same_row() {
        let events = [
            ev("1", 10, Some("a"), Status::Open),
            ev("3", 30, None, Status::Closed),
            ev("2", 20, Some("c"), Status::Accepted),
        ];
        let expected = fold(&events);
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let shuffled = order.map(|i| events[i].clone());
            assert_eq!(fold(&shuffled), expected);
        }
        assert_eq!(hostname(&expected[0]), Some(("c", "2")));
    }

    #[test]
    fn timestamp_ties_go_to_the_greater_id_byte_wise() {
        // "B" < "a" byte-wise (a locale-aware comparison says otherwise).
        let events = [
            ev("a", 10, Some("from-a"), Status::Accepted),
            ev("B", 10, Some("from-B"), Status::Open),
        ];
        for pair in [events.clone(), [events[1].clone(), events[0].clone()]] {
            let f = &fold(&pair)[0];
            assert_eq!(f.status, Status::Accepted);
            assert_eq!(hostname(f), Some(("from-a", "a")));
        }
    }
}
