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

pub mod cli;
pub mod config;
mod db;
mod error;
mod event;
pub mod generate;
pub mod ingest;
pub mod repository;

pub use config::Config;
pub use db::{Database, Engine, MAX_ATTEMPTS, Session, WriteTurn, retry_conflicts};
pub use error::{Error, Result, Retryable};
pub use event::{ExposureEvent, InvalidField, MAX_ID_BYTES, RawJson};
pub use repository::{ExposureRepository, IngestStats, ingest_events};

/// The DuckDB connection adapter (re-exported from the `duckdb-adapter` crate).
pub use duckdb_adapter;
/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Sea-ORM entities (re-exported from the `entity` crate).
pub use entity;
/// The schema migrations and their verbs (re-exported from the `migration` crate).
pub use migration;
