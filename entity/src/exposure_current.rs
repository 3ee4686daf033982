//! `exposures_current`: the latest state of each exposure.
//!
//! One row per `(office_id, exposure_id)` (the composite primary key), upserted
//! whenever a new event for that exposure is applied. It is derived from the
//! audit log in [`exposure_events`](crate::exposure_event) and answers "what is
//! exposed right now" without scanning the whole log.
//!
//! It is a function of the log alone: order a key's events by `(timestamp,
//! event_id)`; `first_seen`/`last_seen` are the earliest and latest
//! timestamps, the other required columns come from the greatest event, and
//! each optional detail from the greatest event in which it is not NULL.
//! The `*_seen_at`/`*_event_id` columns record which event each detail came
//! from (its provenance), so that merging new events into a stored row
//! gives the same result in any arrival order.

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
    /// Id of the latest event: of the events of this key, the greatest by
    /// `(timestamp, event_id)` (ids compared byte-wise). `exposure_class`,
    /// `status`, `severity`, `event_action`, `risk_score` and `asset_id`
    /// are its values; `last_seen` is its timestamp. `None` only on rows
    /// written before migration 5 until `exposure-store init` fills them.
    pub last_event_id: Option<String>,
    /// When the event `hostname` comes from happened (the greatest event with a
    /// host name); `None` when `hostname` is `None`.
    pub hostname_seen_at: Option<DateTimeUtc>,
    /// Id of the event `hostname` comes from; `None` when `hostname` is `None`.
    pub hostname_event_id: Option<String>,
    /// When the event `asset_ip` comes from happened (the greatest event with a
    /// asset IP address); `None` when `asset_ip` is `None`.
    pub asset_ip_seen_at: Option<DateTimeUtc>,
    /// Id of the event `asset_ip` comes from; `None` when `asset_ip` is `None`.
    pub asset_ip_event_id: Option<String>,
    /// When the event `dst_ip` comes from happened (the greatest event with a
    /// destination IP address); `None` when `dst_ip` is `None`.
    pub dst_ip_seen_at: Option<DateTimeUtc>,
    /// Id of the event `dst_ip` comes from; `None` when `dst_ip` is `None`.
    pub dst_ip_event_id: Option<String>,
    /// When the event `dst_port` comes from happened (the greatest event with a
    /// destination port); `None` when `dst_port` is `None`.
    pub dst_port_seen_at: Option<DateTimeUtc>,
    /// Id of the event `dst_port` comes from; `None` when `dst_port` is `None`.
    pub dst_port_event_id: Option<String>,
    /// When the event `protocol` comes from happened (the greatest event with a
    /// protocol); `None` when `protocol` is `None`.
    pub protocol_seen_at: Option<DateTimeUtc>,
    /// Id of the event `protocol` comes from; `None` when `protocol` is `None`.
    pub protocol_event_id: Option<String>,
    /// When the event `service_name` comes from happened (the greatest event with a
    /// service name); `None` when `service_name` is `None`.
    pub service_name_seen_at: Option<DateTimeUtc>,
    /// Id of the event `service_name` comes from; `None` when `service_name` is `None`.
    pub service_name_event_id: Option<String>,
    /// When the event `service_product` comes from happened (the greatest event with a
    /// service product); `None` when `service_product` is `None`.
    pub service_product_seen_at: Option<DateTimeUtc>,
    /// Id of the event `service_product` comes from; `None` when `service_product` is `None`.
    pub service_product_event_id: Option<String>,
    /// When the event `service_version` comes from happened (the greatest event with a
    /// service version); `None` when `service_version` is `None`.
    pub service_version_seen_at: Option<DateTimeUtc>,
    /// Id of the event `service_version` comes from; `None` when `service_version` is `None`.
    pub service_version_event_id: Option<String>,
}

/// `exposures_current` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
