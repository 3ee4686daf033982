//! The input event: one observation of one exposure.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::entity::{EventAction, Severity, Status};

/// One exposure event as scanners and agents report it: the fields of the
/// `exposure_events` table.
///
/// Deserializing accepts what the NDJSON input format allows: optional
/// fields may be `null` or absent, unknown keys are ignored, `timestamp` is
/// RFC 3339 with any offset and any fractional precision (stored as the
/// instant, to the microsecond), and the enumerated fields are accepted in
/// any case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExposureEvent {
    /// Unique id of the event (the audit log's key).
    pub event_id: String,
    /// When the event happened.
    #[serde(deserialize_with = "timestamp_micros")]
    pub timestamp: DateTime<Utc>,
    /// Office (site) the asset belongs to.
    pub office_id: String,
    /// Asset the exposure was found on.
    pub asset_id: String,
    /// Identifier of the exposure within the office.
    pub exposure_id: String,
    /// Kind of exposure (`open_port`, `outdated_software`, ...).
    pub exposure_class: String,
    /// What this event did to the exposure.
    #[serde(deserialize_with = "any_case")]
    pub event_action: EventAction,
    /// Status of the exposure after this event.
    #[serde(deserialize_with = "any_case")]
    pub status: Status,
    /// Severity of the exposure after this event.
    #[serde(deserialize_with = "any_case")]
    pub severity: Severity,
    /// Risk score after this event.
    pub risk_score: f64,
    /// Host name of the asset.
    #[serde(default)]
    pub hostname: Option<String>,
    /// IP address of the asset.
    #[serde(default)]
    pub asset_ip: Option<String>,
    /// Destination IP of the exposed service.
    #[serde(default)]
    pub dst_ip: Option<String>,
    /// Destination port of the exposed service (0-65535).
    #[serde(default)]
    pub dst_port: Option<i32>,
    /// Transport protocol (`tcp`, `udp`, ...).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Service name (`https`, `domain`, ...).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Product implementing the service.
    #[serde(default)]
    pub service_product: Option<String>,
    /// Version of the product.
    #[serde(default)]
    pub service_version: Option<String>,
    /// Scan run that produced the event.
    #[serde(default)]
    pub scan_run_id: Option<String>,
    /// The original record, any JSON value, kept for auditing.
    #[serde(default)]
    pub raw_payload_json: Option<serde_json::Value>,
}

impl From<crate::entity::exposure_event::Model> for ExposureEvent {
    /// An event as stored in the audit log.
    fn from(m: crate::entity::exposure_event::Model) -> Self {
        Self {
            event_id: m.event_id,
            timestamp: m.timestamp,
            office_id: m.office_id,
            asset_id: m.asset_id,
            exposure_id: m.exposure_id,
            exposure_class: m.exposure_class,
            event_action: m.event_action,
            status: m.status,
            severity: m.severity,
            risk_score: m.risk_score,
            hostname: m.hostname,
            asset_ip: m.asset_ip,
            dst_ip: m.dst_ip,
            dst_port: m.dst_port,
            protocol: m.protocol,
            service_name: m.service_name,
            service_product: m.service_product,
            service_version: m.service_version,
            scan_run_id: m.scan_run_id,
            raw_payload_json: m.raw_payload_json,
        }
    }
}

/// Why an event is not acceptable, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}': {reason}")]
pub struct InvalidField {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// The longest identifier accepted, in bytes: `event_id`, `office_id`,
/// `asset_id`, `exposure_id`, `exposure_class` and `scan_run_id` are
/// indexed, and a PostgreSQL index entry must fit in about 2.7 kB (two of
/// them share the `(office_id, exposure_class)` index).
pub const MAX_ID_BYTES: usize = 1_024;

/// What [`ExposureEvent::validate`] requires of a text field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    /// Indexed and required: not blank, at most [`MAX_ID_BYTES`].
    RequiredIdentifier,
    /// Indexed, optional: at most [`MAX_ID_BYTES`].
    Identifier,
    /// Any length.
    Detail,
}

impl ExposureEvent {
    /// Checks what the types alone cannot: required text is not empty,
    /// identifiers are at most [`MAX_ID_BYTES`] long, no text (nor any
    /// string of the JSON payload) holds the NUL character
    /// (PostgreSQL cannot store it, so such an event is refused on both
    /// engines alike), the port is a port, the score is a finite number.
    ///
    /// # Errors
    /// The first field that is not acceptable.
    pub fn validate(&self) -> Result<(), InvalidField> {
        use TextKind::{Detail, Identifier, RequiredIdentifier};
        let texts = [
            ("event_id", Some(self.event_id.as_str()), RequiredIdentifier),
            ("office_id", Some(&self.office_id), RequiredIdentifier),
            ("asset_id", Some(&self.asset_id), RequiredIdentifier),
            ("exposure_id", Some(&self.exposure_id), RequiredIdentifier),
            (
                "exposure_class",
                Some(&self.exposure_class),
                RequiredIdentifier,
            ),
            ("scan_run_id", self.scan_run_id.as_deref(), Identifier),
            ("hostname", self.hostname.as_deref(), Detail),
            ("asset_ip", self.asset_ip.as_deref(), Detail),
            ("dst_ip", self.dst_ip.as_deref(), Detail),
            ("protocol", self.protocol.as_deref(), Detail),
            ("service_name", self.service_name.as_deref(), Detail),
            ("service_product", self.service_product.as_deref(), Detail),
            ("service_version", self.service_version.as_deref(), Detail),
        ];
        for (field, value, kind) in texts {
            let Some(value) = value else { continue };
            let reason = if kind == RequiredIdentifier && value.trim().is_empty() {
                "must not be empty".to_owned()
            } else if kind != Detail && value.len() > MAX_ID_BYTES {
                format!(
                    "is {} bytes long; identifiers are at most {MAX_ID_BYTES}",
                    value.len()
                )
            } else if value.contains('\0') {
                "must not contain the NUL character (U+0000)".to_owned()
            } else {
                continue;
            };
            return Err(InvalidField { field, reason });
        }
        if self.raw_payload_json.as_ref().is_some_and(json_has_nul) {
            return Err(InvalidField {
                field: "raw_payload_json",
                reason: "must not contain the NUL character (U+0000)".to_owned(),
            });
        }
        if !self.risk_score.is_finite() {
            return Err(InvalidField {
                field: "risk_score",
                reason: "must be a finite number".to_owned(),
            });
        }
        if let Some(port) = self.dst_port
            && !(0..=65_535).contains(&port)
        {
            return Err(InvalidField {
                field: "dst_port",
                reason: format!("{port} is not a port number (0-65535)"),
            });
        }
        Ok(())
    }

    /// `timestamp` at the precision the database stores (microseconds).
    #[must_use]
    pub fn timestamp_micros(&self) -> i64 {
        self.timestamp.timestamp_micros()
    }
}

/// Whether a string or key anywhere inside `value` holds U+0000 (which
/// PostgreSQL's JSON types refuse).
fn json_has_nul(value: &serde_json::Value) -> bool {
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => return true,
            serde_json::Value::Array(items) => pending.extend(items),
            serde_json::Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                pending.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

fn timestamp_micros<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
        .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 timestamp '{text}': {e}")))
}

fn any_case<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"event_id":"b3831f17","timestamp":"2025-01-05T16:00:03.161123456-08:00","office_id":"office-005","asset_id":"asset-005-00026","exposure_id":"EXP-ac87f8505ae9","exposure_class":"outdated_software","event_action":"Opened","status":"OPEN","severity":"medium","risk_score":6.4,"hostname":"ws","dst_port":53,"scan_run_id":null,"raw_payload_json":{"seq":0},"unknown":1}"#;

    #[test]
    fn parses_the_documented_line_shape() -> Result<(), serde_json::Error> {
        let e: ExposureEvent = serde_json::from_str(LINE)?;
        assert_eq!(e.event_action, EventAction::Opened);
        assert_eq!(e.status, Status::Open);
        assert_eq!(e.timestamp.to_rfc3339(), "2025-01-06T00:00:03.161123+00:00");
        assert_eq!(e.asset_ip, None);
        assert_eq!(e.raw_payload_json, Some(serde_json::json!({"seq": 0})));
        assert_eq!(e.validate(), Ok(()));
        Ok(())
    }

    #[test]
    fn rejects_unknown_severity_with_the_vocabulary() {
        let bad = LINE.replace("\"medium\"", "\"urgent\"");
        let err = serde_json::from_str::<ExposureEvent>(&bad)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("urgent") && m.contains("critical")));
    }

    #[test]
    fn validation_names_the_field() -> Result<(), serde_json::Error> {
        let mut e: ExposureEvent = serde_json::from_str(LINE)?;
        e.dst_port = Some(70_000);
        assert_eq!(e.validate().map_err(|f| f.field), Err("dst_port"));
        e.dst_port = None;
        e.office_id = " ".to_owned();
        assert_eq!(e.validate().map_err(|f| f.field), Err("office_id"));
        e.office_id = "office-005".to_owned();
        e.service_version = Some("2.8\u{0}9".to_owned());
        assert_eq!(e.validate().map_err(|f| f.field), Err("service_version"));
        e.service_version = None;
        e.service_version = Some("x".repeat(1 << 20));
        assert_eq!(e.validate(), Ok(()), "details may be long");
        e.exposure_id = "x".repeat(MAX_ID_BYTES + 1);
        assert_eq!(e.validate().map_err(|f| f.field), Err("exposure_id"));
        e.exposure_id = "x".repeat(MAX_ID_BYTES);
        assert_eq!(e.validate(), Ok(()));
        e.raw_payload_json = Some(serde_json::json!({"deep": [{"x": "a\u{0}"}]}));
        assert_eq!(e.validate().map_err(|f| f.field), Err("raw_payload_json"));
        Ok(())
    }
}
