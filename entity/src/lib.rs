//! Sea-ORM entities of exposure-store.
//!
//! Data only, no behaviour. The schema is created by the `migration` crate and
//! must work on both DuckDB and PostgreSQL:
//!
//! - [`exposure_event`] (`exposure_events`): append-only audit log, one row per
//!   event, keyed by `event_id`.
//! - [`exposure_current`] (`exposures_current`): latest state per
//!   `(office_id, exposure_id)`, upserted as events are applied.
//! - [`quarantined_file`] (`quarantined_files`): input files that failed to be
//!   ingested, with the reason.
//!
//! The enumerated columns (severity, status, event action) are stored as text;
//! see [`enums`].

pub mod enums;
pub mod exposure_current;
pub mod exposure_event;
pub mod prelude;
pub mod quarantined_file;

pub use enums::{EventAction, Severity, Status, UnknownVariant};
