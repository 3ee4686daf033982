//! `exposure_events`: the append-only audit log of exposure changes.
//!
//! Every observation that opens, updates, closes or reopens an exposure is
//! recorded as one row, keyed by its `event_id`. Rows are only ever inserted,
//! never updated or deleted; the latest state of each exposure is kept
//! separately in [`exposures_current`](crate::exposure_current).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{EventAction, Severity, Status};

/// One event of the audit log (a row of `exposure_events`).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "exposure_events")]
pub struct Model {
    /// Unique identifier of the event, supplied by the producer (primary key).
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    /// When the event happened.
    pub timestamp: DateTimeUtc,
    /// Office (site) the asset belongs to.
    pub office_id: String,
    /// Asset the exposure was found on.
    pub asset_id: String,
    /// Identifier of the exposure, unique within an office.
    pub exposure_id: String,
    /// Kind of exposure (for example an open port or a vulnerable service).
    pub exposure_class: String,
    /// What this event did to the exposure.
    pub event_action: EventAction,
    /// Status of the exposure after this event.
    pub status: Status,
    /// Severity of the exposure after this event.
    pub severity: Severity,
    /// Numeric risk score of the exposure after this event.
    #[sea_orm(column_type = "Double")]
    pub risk_score: f64,
    /// Host name of the asset, if known.
    pub hostname: Option<String>,
    /// IP address of the asset, if known.
    pub asset_ip: Option<String>,
    /// Destination IP address of the exposed service, if any.
    pub dst_ip: Option<String>,
    /// Destination port of the exposed service, if any.
    pub dst_port: Option<i32>,
    /// Transport protocol of the exposed service (for example `tcp`), if any.
    pub protocol: Option<String>,
    /// Name of the exposed service, if identified.
    pub service_name: Option<String>,
    /// Product implementing the exposed service, if identified.
    pub service_product: Option<String>,
    /// Version of the service product, if identified.
    pub service_version: Option<String>,
    /// Scan run that produced this event, if any.
    pub scan_run_id: Option<String>,
    /// The original input record, kept for auditing: the JSON text exactly
    /// as the producer sent it (every digit of every number, keys in their
    /// order). A `JSON` column; read as its text and written through a cast
    /// to `JSON`, so no value passes through a lossy JSON tree. Parse it
    /// with `serde_json` (into `RawValue` to keep it exact).
    #[sea_orm(column_type = "Json", nullable, select_as = "text", save_as = "json")]
    pub raw_payload_json: Option<String>,
}

/// `exposure_events` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
