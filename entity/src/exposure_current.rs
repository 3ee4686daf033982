//! `exposures_current`: the latest state of each exposure.
//!
//! One row per `(office_id, exposure_id)` (the composite primary key), upserted
//! whenever a new event for that exposure is applied. It is derived from the
//! audit log in [`exposure_events`](crate::exposure_event) and answers "what is
//! exposed right now" without scanning the whole log.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{EventAction, Severity, Status};

/// Latest state of one exposure (a row of `exposures_current`).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "exposures_current")]
pub struct Model {
    /// Office (site) the exposure belongs to (first part of the primary key).
    #[sea_orm(primary_key, auto_increment = false)]
    pub office_id: String,
    /// Identifier of the exposure within its office (second part of the
    /// primary key).
    #[sea_orm(primary_key, auto_increment = false)]
    pub exposure_id: String,
    /// Kind of exposure (for example an open port or a vulnerable service).
    pub exposure_class: String,
    /// Current status of the exposure.
    pub status: Status,
    /// Current severity of the exposure.
    pub severity: Severity,
    /// Action of the latest event applied to this exposure.
    pub event_action: EventAction,
    /// Current numeric risk score of the exposure.
    #[sea_orm(column_type = "Double")]
    pub risk_score: f64,
    /// When the exposure was first seen.
    pub first_seen: DateTimeUtc,
    /// When the exposure was last seen (timestamp of the latest event).
    pub last_seen: DateTimeUtc,
    /// Asset the exposure is on.
    pub asset_id: String,
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
}

/// `exposures_current` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
