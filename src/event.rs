//! The input event: one observation of one exposure.

use chrono::{DateTime, Utc};
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
    /// The original record, any JSON value, kept for auditing exactly as
    /// it was sent.
    #[serde(default)]
    pub raw_payload_json: Option<RawJson>,
}

/// A JSON value kept as the text it was sent as: numbers keep every digit
/// (`123456789012345678901234567890`, `1e400`), objects their key order and
/// duplicate keys, strings their escapes. Always valid JSON: every way of
/// building one checks the text.
///
/// Two `RawJson` are equal when their texts are (`{"a":1}` and `{"a": 1}`
/// differ): the payload is evidence, compared as sent.
#[derive(Clone)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// The JSON text `text`, checked.
    ///
    /// # Errors
    /// When `text` is not one valid JSON value (surrounding whitespace is
    /// allowed and dropped).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).map(Self)
    }

    /// The compact JSON text of `value` (object keys in `Value`'s order).
    ///
    /// # Errors
    /// Never for a `serde_json::Value`; the signature is serde_json's.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RawJson {}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawJson").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawJson {
    /// As the JSON value itself (not as a string holding it).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    /// Any JSON value, captured as its text (numbers are checked for
    /// syntax, never converted).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(d).map(Self)
    }
}

impl TryFrom<crate::entity::exposure_event::Model> for ExposureEvent {
    type Error = serde_json::Error;

    /// An event as stored in the audit log.
    ///
    /// # Errors
    /// When the stored payload is not valid JSON (written by another tool:
    /// both engines check JSON on the way in).
    fn try_from(m: crate::entity::exposure_event::Model) -> Result<Self, Self::Error> {
        Ok(Self {
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
            raw_payload_json: m
                .raw_payload_json
                .as_deref()
                .map(RawJson::parse)
                .transpose()?,
        })
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
    /// identifiers are at most [`MAX_ID_BYTES`] long, no text field holds
    /// the NUL character (PostgreSQL's text cannot store it, so such an
    /// event is refused on both engines alike), the port is a port, the
    /// score is a finite number. The payload needs no check: it is valid
    /// JSON by construction, and both engines store any JSON text (a
    /// `\u0000` escape included).
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

/// An RFC 3339 timestamp (any offset, any fractional precision, `T` or a
/// space between date and time), stored as its instant to the microsecond.
/// The instant must fall in the years 0000-9999 in UTC (else it has no
/// RFC 3339 form to be shown in), and a second of 60 is a leap second: only
/// at 23:59:60 UTC, stored as the first instant of the next day (neither
/// engine has leap seconds).
fn timestamp_micros<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    use chrono::{Datelike, Timelike};
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    let invalid = |why: &dyn std::fmt::Display| {
        serde::de::Error::custom(format!("invalid RFC 3339 timestamp '{text}': {why}"))
    };
    let t = DateTime::parse_from_rfc3339(&text)
        .map_err(|e| invalid(&e))?
        .with_timezone(&Utc);
    if !(0..=9_999).contains(&t.year()) {
        return Err(invalid(
            &"the instant is outside the years 0000-9999 in UTC",
        ));
    }
    if t.nanosecond() >= 1_000_000_000 && (t.hour(), t.minute()) != (23, 59) {
        return Err(invalid(
            &"second 60 is a leap second, only valid at 23:59:60 UTC",
        ));
    }
    // Through microseconds since the epoch: the precision stored, and a
    // leap second becomes the next day's first second.
    DateTime::from_timestamp_micros(t.timestamp_micros())
        .ok_or_else(|| invalid(&"the instant is out of range"))
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
        assert_eq!(
            e.raw_payload_json.as_ref().map(RawJson::as_str),
            Some(r#"{"seq":0}"#)
        );
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
        e.raw_payload_json = Some(RawJson::parse(r#"{"deep": [{"x": "a\u0000"}]}"#)?);
        assert_eq!(e.validate(), Ok(()), "a payload may hold any JSON");
        Ok(())
    }

    #[test]
    fn scores_parse_to_the_nearest_double() -> Result<(), serde_json::Error> {
        // The shortest text of 0x1.9f9a34653a50cp-3; serde_json's default
        // fast path read it one ulp low.
        let line = LINE.replace("6.4", "0.20293084081576074");
        let e: ExposureEvent = serde_json::from_str(&line)?;
        assert_eq!(e.risk_score.to_bits(), 0x3FC9_F9A3_4653_A50C);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let x = f64::from_bits(rng.u64(0x3C00_0000_0000_0000..0x4400_0000_0000_0000));
            let e: ExposureEvent =
                serde_json::from_str(&LINE.replace("6.4", &format!("{x:.16e}")))?;
            let exact = format!("{x:.16e}")
                .parse::<f64>()
                .map_err(serde::de::Error::custom)?;
            assert_eq!(e.risk_score.to_bits(), exact.to_bits(), "{x:.16e}");
        }
        Ok(())
    }

    #[test]
    fn the_payload_is_kept_as_sent() -> Result<(), serde_json::Error> {
        let payload = r#"{"zkey":1, "big":123456789012345678901234567890,"below_i64":-9223372036854775809,"huge":1e400,"f":0.20293084081576074,"dup":1,"dup":2,"s":"\u00e9\"","nul":"\u0000"}"#;
        let line = LINE.replace(r#"{"seq":0}"#, &format!(" {payload}\t"));
        let e: ExposureEvent = serde_json::from_str(&line)?;
        assert_eq!(e.validate(), Ok(()));
        let kept = e.raw_payload_json.as_ref().map(RawJson::as_str);
        assert_eq!(
            kept,
            Some(payload),
            "digits, key order, duplicates, escapes"
        );
        let again: ExposureEvent = serde_json::from_str(&serde_json::to_string(&e)?)?;
        assert_eq!(again, e, "serialized as the JSON value itself");
        assert!(RawJson::parse("{\"a\":").is_err());
        assert!(RawJson::parse("1 2").is_err());
        Ok(())
    }

    #[test]
    fn timestamps_are_instants_with_an_rfc_3339_form() {
        let at = |t: &str| {
            serde_json::from_str::<ExposureEvent>(
                &LINE.replace("2025-01-05T16:00:03.161123456-08:00", t),
            )
            .map(|e| e.timestamp.to_rfc3339())
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            at("2025-01-01 00:00:00Z").as_deref(),
            Ok("2025-01-01T00:00:00+00:00")
        );
        assert_eq!(
            at("9999-12-31T23:59:59Z").as_deref(),
            Ok("9999-12-31T23:59:59+00:00")
        );
        let past = at("9999-12-31T23:59:59-23:59");
        assert!(
            past.as_ref().is_err_and(|m| m.contains("0000-9999")),
            "{past:?}"
        );
        assert!(at("0000-01-01T00:00:00+00:01").is_err());
        // A leap second only where one can be: 23:59:60 UTC, at any offset.
        assert_eq!(
            at("2016-12-31T23:59:60.5Z").as_deref(),
            Ok("2017-01-01T00:00:00.500+00:00")
        );
        assert!(at("2017-01-01T00:59:60+01:00").is_ok());
        let any_minute = at("2025-06-15T12:34:60.5Z");
        assert!(
            any_minute
                .as_ref()
                .is_err_and(|m| m.contains("leap second")),
            "{any_minute:?}"
        );
    }
}
