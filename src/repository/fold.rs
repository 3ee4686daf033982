//! Folding a batch of events into at most one row per exposure key.
//!
//! DuckDB keeps only the FIRST row when one `INSERT ... ON CONFLICT DO
//! UPDATE` proposes the same key twice, silently. So every upsert statement
//! carries at most one row per `(office_id, exposure_id)`, and the events of
//! a batch are folded here first, with exactly the rules the upsert applies.
//!
//! The rules, applied event by event in input order to the stored row `S`
//! (or to nothing, for a new key):
//!
//! - `first_seen = min`, `last_seen = max` of the timestamps;
//! - an event is *newer* when its timestamp is `>= S.last_seen`: then
//!   `status`, `severity`, `event_action`, `risk_score`, `exposure_class`
//!   and `asset_id` come from it, and each optional detail is replaced by
//!   the event's value unless that is NULL (`COALESCE(event, stored)`);
//! - an *older* (late) event only fills details that are NULL
//!   (`COALESCE(stored, event)`).
//!
//! The fold runs over a whole ingest call (all of its chunks), so each key
//! is written to `exposures_current` once per call: updating the same rows
//! once per chunk would leave one row version per chunk in the transaction.
//!
//! For one key and a batch `e1..en` this sequence has a closed form. Call
//! `ei` a *record* event when its timestamp is `>=` the stored `last_seen`
//! and every earlier event of the batch. For each detail `f`, the result is
//! `COALESCE(r.f, S.f, first.f)`, where `r` is the last record event whose
//! `f` is not NULL and `first` the first event whose `f` is not NULL. Which
//! events are records depends on the stored `last_seen`, so the caller
//! looks it up first; then two statements apply the closed form:
//!
//! 1. *fill*: stored keys only, details = `first.f` where no `r.f` exists,
//!    `UPDATE ... SET f = COALESCE(stored.f, fill.f)`;
//! 2. *replace*: every key, details = `r.f` (for a new key `COALESCE(r.f,
//!    first.f)`), `ON CONFLICT DO UPDATE SET f = COALESCE(excluded.f,
//!    stored.f)`.
//!
//! Either order gives `COALESCE(r.f, S.f, first.f)`: a detail is in the fill
//! row only where `r.f` is NULL.

use std::collections::{HashMap, HashSet};

use crate::entity::{EventAction, Severity, Status};
use crate::event::ExposureEvent;

/// `(office_id, exposure_id)`.
pub(crate) type Key = (String, String);

macro_rules! details {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// The COALESCE-preserved optional details of an exposure.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub(crate) struct Details {
            $(pub(crate) $field: Option<$ty>,)*
        }

        impl Details {
            /// `self.f = COALESCE(e.f, self.f)` for every detail.
            fn replace_from(&mut self, e: &ExposureEvent) {
                $(if let Some(value) = &e.$field {
                    match &mut self.$field {
                        Some(current) => current.clone_from(value),
                        slot @ None => *slot = Some(value.clone()),
                    }
                })*
            }

            /// `self.f = COALESCE(self.f, e.f)` for every detail.
            fn fill_from(&mut self, e: &ExposureEvent) {
                $(if self.$field.is_none() { self.$field.clone_from(&e.$field); })*
            }

            /// `self.f = COALESCE(self.f, other.f)` for every detail.
            fn fill_from_details(&mut self, other: &Self) {
                $(if self.$field.is_none() { self.$field.clone_from(&other.$field); })*
            }

            /// Keeps `self.f` only where `mask.f` is NULL.
            fn without(mut self, mask: &Self) -> Self {
                $(if mask.$field.is_some() { self.$field = None; })*
                self
            }

            fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())*
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

/// The fold of one key's events in one batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Folded {
    pub(crate) office_id: String,
    pub(crate) exposure_id: String,
    /// Whether the key was stored before the batch.
    pub(crate) existed: bool,
    pub(crate) exposure_class: String,
    pub(crate) asset_id: String,
    pub(crate) status: Status,
    pub(crate) severity: Severity,
    pub(crate) event_action: EventAction,
    pub(crate) risk_score: f64,
    /// Earliest timestamp of the batch, in microseconds.
    pub(crate) first_seen: i64,
    /// Latest timestamp of the batch, in microseconds.
    pub(crate) last_seen: i64,
    /// Details for the replace pass.
    pub(crate) replace: Details,
    /// Details for the fill pass (`None`: no fill row for this key).
    pub(crate) fill: Option<Details>,
}

/// The values taken from the newest event.
#[derive(Debug)]
struct Latest {
    exposure_class: String,
    asset_id: String,
    status: Status,
    severity: Severity,
    event_action: EventAction,
    risk_score: f64,
}

impl Latest {
    fn of(e: &ExposureEvent) -> Self {
        Self {
            exposure_class: e.exposure_class.clone(),
            asset_id: e.asset_id.clone(),
            status: e.status,
            severity: e.severity,
            event_action: e.event_action,
            risk_score: e.risk_score,
        }
    }

    fn set(&mut self, e: &ExposureEvent) {
        self.exposure_class.clone_from(&e.exposure_class);
        self.asset_id.clone_from(&e.asset_id);
        self.status = e.status;
        self.severity = e.severity;
        self.event_action = e.event_action;
        self.risk_score = e.risk_score;
    }
}

#[derive(Debug)]
struct Acc {
    office_id: String,
    exposure_id: String,
    latest: Latest,
    stored: bool,
    /// The stored `last_seen` the fold started from (`None`: a new key).
    assumed: Option<i64>,
    first_seen: i64,
    last_seen: i64,
    /// The running maximum that decides record events (starts at the
    /// stored `last_seen`).
    record_bar: Option<i64>,
    record: Details,
    first: Details,
}

/// The fold of one ingest call, fed event by event in input order.
#[derive(Debug, Default)]
pub(crate) struct Folder {
    /// office id -> exposure id -> position in `accs` (offices are few, so
    /// lookups by `&str` need no key allocation).
    index: HashMap<String, HashMap<String, usize>>,
    accs: Vec<Acc>,
}

impl Folder {
    /// Whether the key already has a fold (its stored state was looked up).
    pub(crate) fn knows(&self, office_id: &str, exposure_id: &str) -> bool {
        self.slot(office_id, exposure_id).is_some()
    }

    fn slot(&self, office_id: &str, exposure_id: &str) -> Option<usize> {
        self.index.get(office_id)?.get(exposure_id).copied()
    }

    /// Folds the next event. For a key seen for the first time, `stored`
    /// gives the stored `last_seen` (microseconds) if the key exists.
    pub(crate) fn push(&mut self, e: &ExposureEvent, stored: impl FnOnce() -> Option<i64>) {
        let t = e.timestamp_micros();
        let slot = match self.slot(&e.office_id, &e.exposure_id) {
            Some(slot) => slot,
            None => {
                let bar = stored();
                self.accs.push(Acc {
                    office_id: e.office_id.clone(),
                    exposure_id: e.exposure_id.clone(),
                    latest: Latest::of(e),
                    stored: bar.is_some(),
                    assumed: bar,
                    first_seen: t,
                    last_seen: t,
                    record_bar: bar,
                    record: Details::default(),
                    first: Details::default(),
                });
                let slot = self.accs.len() - 1;
                self.index
                    .entry(e.office_id.clone())
                    .or_default()
                    .insert(e.exposure_id.clone(), slot);
                slot
            }
        };
        let acc = &mut self.accs[slot];
        acc.first_seen = acc.first_seen.min(t);
        if t >= acc.last_seen {
            acc.last_seen = t;
            acc.latest.set(e); // ties: the later event in input order wins
        }
        if acc.record_bar.is_none_or(|bar| t >= bar) {
            acc.record_bar = Some(t);
            acc.record.replace_from(e);
        }
        acc.first.fill_from(e);
    }

    /// Every key folded so far, with the stored `last_seen` its fold
    /// started from (`None`: the key was not stored).
    pub(crate) fn assumed(&self) -> impl Iterator<Item = (&str, &str, Option<i64>)> {
        self.accs
            .iter()
            .map(|a| (a.office_id.as_str(), a.exposure_id.as_str(), a.assumed))
    }

    /// Drops the folds of `keys`, so that their events can be folded again
    /// from another stored state.
    pub(crate) fn forget(&mut self, keys: &HashSet<Key>) {
        self.accs
            .retain(|a| !keys.contains(&(a.office_id.clone(), a.exposure_id.clone())));
        self.index.clear();
        for (slot, a) in self.accs.iter().enumerate() {
            self.index
                .entry(a.office_id.clone())
                .or_default()
                .insert(a.exposure_id.clone(), slot);
        }
    }

    /// One row per key, in order of first appearance.
    pub(crate) fn finish(self) -> Vec<Folded> {
        self.accs.into_iter().map(Acc::finish).collect()
    }
}

/// Folds `events` (in input order) per key. `stored_last_seen` gives the
/// stored `last_seen` (microseconds) of keys that exist.
#[cfg(test)]
pub(crate) fn fold<'a>(
    events: impl IntoIterator<Item = &'a ExposureEvent>,
    stored_last_seen: &HashMap<Key, i64>,
) -> Vec<Folded> {
    let mut folder = Folder::default();
    for e in events {
        folder.push(e, || {
            stored_last_seen
                .get(&(e.office_id.clone(), e.exposure_id.clone()))
                .copied()
        });
    }
    folder.finish()
}

impl Acc {
    fn finish(self) -> Folded {
        let (replace, fill) = if self.stored {
            let fill = self.first.without(&self.record);
            (self.record, (!fill.is_empty()).then_some(fill))
        } else {
            let mut all = self.record;
            all.fill_from_details(&self.first);
            (all, None)
        };
        Folded {
            office_id: self.office_id,
            exposure_id: self.exposure_id,
            existed: self.stored,
            exposure_class: self.latest.exposure_class,
            asset_id: self.latest.asset_id,
            status: self.latest.status,
            severity: self.latest.severity,
            event_action: self.latest.event_action,
            risk_score: self.latest.risk_score,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            replace,
            fill,
        }
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

    #[test]
    fn a_forgotten_key_folds_again_as_if_from_the_start() {
        let mut other_key = ev("4", 15, Some("other"), Status::Open);
        other_key.exposure_id = "y".to_owned();
        let events = [
            ev("1", 10, Some("h1"), Status::Open),
            other_key,
            ev("2", 30, None, Status::Closed),
        ];
        let key = ("o".to_owned(), "x".to_owned());
        // Folded first as a new key, then found stored at 20 by a re-read.
        let mut folder = Folder::default();
        for e in &events {
            folder.push(e, || None);
        }
        let stale: HashSet<Key> = [key.clone()].into();
        folder.forget(&stale);
        for e in events.iter().filter(|e| e.exposure_id == "x") {
            folder.push(e, || Some(20_000_000));
        }
        let assumed: Vec<_> = folder
            .assumed()
            .map(|(_, x, s)| (x.to_owned(), s))
            .collect();
        assert_eq!(
            assumed,
            [("y".to_owned(), None), ("x".to_owned(), Some(20_000_000))]
        );
        let stored = HashMap::from([(key, 20_000_000)]);
        let mut again = folder.finish();
        again.sort_by(|a, b| a.exposure_id.cmp(&b.exposure_id));
        let mut expected = fold(&events, &stored);
        expected.sort_by(|a, b| a.exposure_id.cmp(&b.exposure_id));
        assert_eq!(again, expected);
    }

    #[test]
    fn new_key_takes_the_newest_status_and_the_newest_non_null_detail() {
        let events = [
            ev("1", 10, Some("h1"), Status::Open),
            ev("2", 30, None, Status::Closed),
            ev("3", 20, Some("h3"), Status::Open), // late within the batch
        ];
        let folded = fold(&events, &HashMap::new());
        assert_eq!(folded.len(), 1);
        let f = &folded[0];
        assert_eq!((f.first_seen, f.last_seen), (10_000_000, 30_000_000));
        assert_eq!(f.status, Status::Closed);
        // e3 arrived after e2 (newer) set the bar: it only fills, h1 stays.
        assert_eq!(f.replace.hostname.as_deref(), Some("h1"));
        assert_eq!(f.fill, None);
    }

    #[test]
    fn late_events_for_a_stored_key_only_fill() {
        let stored: HashMap<Key, i64> = [(("o".to_owned(), "x".to_owned()), 100_000_000)].into();
        let events = [ev("1", 50, Some("late"), Status::Open)];
        let f = &fold(&events, &stored)[0];
        assert!(f.existed);
        assert_eq!(f.replace.hostname, None);
        assert_eq!(
            f.fill.as_ref().and_then(|d| d.hostname.as_deref()),
            Some("late")
        );
    }

    #[test]
    fn ties_go_to_the_later_event_in_input_order() {
        let events = [
            ev("1", 10, None, Status::Open),
            ev("2", 10, None, Status::Accepted),
        ];
        assert_eq!(fold(&events, &HashMap::new())[0].status, Status::Accepted);
    }
}
