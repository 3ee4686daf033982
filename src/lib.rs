//! exposure-store: the storage layer for security exposure data.
//!
//! Scanners and agents report exposures (an open port, an outdated service,
//! default credentials) as events. exposure-store keeps:
//!
//! - `exposure_events`: the append-only audit log of every event;
//! - `exposures_current`: the latest state per `(office_id, exposure_id)`;
//! - `quarantined_files`: input files that failed, with the reason.
//!
//! DuckDB is the embedded default; PostgreSQL is the path for many writers
//! and readers ([`Database::connect`], or [`Database::from_env`] with
//! `DATABASE_URL`); everything else is the same on both. Open a
//! [`Database`], apply the migrations with [`Database::init`], and work in
//! units of work:
//!
//! ```no_run
//! # async fn demo() -> exposure_store::Result<()> {
//! use exposure_store::{Database, entity::prelude::*};
//! use sea_orm::{EntityTrait, PaginatorTrait};
//!
//! let db = Database::open("/tmp/exposures.duckdb")?;
//! db.init().await?;
//! let open = db
//!     .transaction(async |session| -> exposure_store::Result<u64> {
//!         Ok(ExposuresCurrent::find().count(session).await?)
//!     })
//!     .await?;
//! # let _ = open;
//! # Ok(())
//! # }
//! ```

mod db;
mod error;
mod event;
mod generate;
mod ingest;
mod repository;

// The public API, one path per item (the modules are private).
pub use db::{Database, MAX_ATTEMPTS, Session, WriteTurn, retry_conflicts};
pub use error::{Error, Result, Retryable};
pub use event::{ExposureEvent, InvalidField, MAX_ID_BYTES, RawJson};
pub use generate::{GenerateOptions, generate};
pub use infra::{Config, Engine, duckdb_options, redact_url};
pub use ingest::{
    DEFAULT_MAX_LINE_BYTES, ErrorType, FileOutcome, FileReport, Limits, NdjsonReader, Progress,
    Rejection, ingest_file,
};
pub use repository::{
    Appended, DEFAULT_CHUNK_SIZE, Difference, DifferenceKind, ExposureCounts, ExposureFilter,
    ExposureRepository, IngestStats, Ingestion, InsertedEvents, Page, PreparedChunk,
    QuarantineRecord, RebuildReport, Totals, UpsertedExposures, VerifyReport, event_key,
    ingest_events,
};

/// This process's peak resident set size, from `/proc/self/status`
/// (`VmHWM`; `None` elsewhere than Linux). The CLI reports it; the
/// benchmark reads it.
#[doc(hidden)]
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The DuckDB connection adapter (re-exported from the `duckdb-adapter` crate).
pub use duckdb_adapter;
/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Sea-ORM entities (re-exported from the `entity` crate).
pub use entity;
/// Which database, PostgreSQL pools, logging, the command lines' shared
/// flags and exit status (re-exported from the `infra` crate).
pub use infra;
/// The schema migrations and their verbs (re-exported from the `migration` crate).
pub use migration;
