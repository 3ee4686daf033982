//! The repository's public value types: what an ingest did, quarantine
//! records, and the dashboard queries' filters and results.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entity::prelude::*;

/// What an ingest did. Adds up across calls (`+=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestStats {
    /// Events appended to `exposure_events`.
    pub events_inserted: u64,
    /// Events skipped: already stored, or repeated within the input.
    pub events_skipped: u64,
    /// Keys of `exposures_current` that did not exist before the call.
    pub exposures_inserted: u64,
    /// Keys that existed before the call and were touched by it.
    pub exposures_updated: u64,
}

impl std::ops::AddAssign for IngestStats {
    fn add_assign(&mut self, other: Self) {
        self.events_inserted += other.events_inserted;
        self.events_skipped += other.events_skipped;
        self.exposures_inserted += other.exposures_inserted;
        self.exposures_updated += other.exposures_updated;
    }
}

impl std::ops::Add for IngestStats {
    type Output = Self;
    fn add(mut self, other: Self) -> Self {
        self += other;
        self
    }
}

/// Outcome of
/// [`ExposureRepository::batch_insert_events`](super::ExposureRepository::batch_insert_events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertedEvents {
    /// Events appended.
    pub inserted: u64,
    /// Events skipped (already stored, or repeated in the input).
    pub skipped: u64,
    /// Input positions of the appended events, ascending.
    pub new_positions: Vec<usize>,
}

/// Outcome of
/// [`ExposureRepository::batch_upsert_current`](super::ExposureRepository::batch_upsert_current).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertedExposures {
    /// Keys created.
    pub inserted: u64,
    /// Keys that existed and were updated.
    pub updated: u64,
}

/// A file that failed to ingest, for
/// [`ExposureRepository::quarantine_file`](super::ExposureRepository::quarantine_file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineRecord {
    /// The input file's path as given.
    pub filename: String,
    /// A short machine-readable category (`invalid_json`, `io_error`, ...).
    pub error_type: String,
    /// A human-readable explanation.
    pub error_message: String,
    /// Details pointing at the problem (line, field, reason, ...).
    pub error_details_json: Option<serde_json::Value>,
}

/// Filters of
/// [`ExposureRepository::current_exposures`](super::ExposureRepository::current_exposures);
/// `None` matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExposureFilter {
    /// Only this office.
    pub office_id: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Only this exposure class.
    pub exposure_class: Option<String>,
    /// Only exposures last seen at or after this instant.
    pub last_seen_from: Option<DateTime<Utc>>,
    /// Only exposures last seen before this instant.
    pub last_seen_to: Option<DateTime<Utc>>,
}

/// A page of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return at most.
    pub limit: u64,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            offset: 0,
            limit: 100,
        }
    }
}

/// Current exposures counted by office, severity and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExposureCounts {
    /// `(office_id, count)`, by office id.
    pub by_office: Vec<(String, u64)>,
    /// `(severity, count)`, most severe first.
    pub by_severity: Vec<(Severity, u64)>,
    /// `(status, count)`, in vocabulary order.
    pub by_status: Vec<(Status, u64)>,
}

/// Row counts of the three tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Rows of `exposure_events`.
    pub events: u64,
    /// Rows of `exposures_current`.
    pub exposures: u64,
    /// Rows of `quarantined_files`.
    pub quarantined_files: u64,
}
