//! Value mapping between sea-query and DuckDB.
//!
//! Sea-ORM decodes strictly: each Rust field type accepts exactly one
//! [`Value`] variant (`i64` only `BigInt`, `DateTime<Utc>` only
//! `ChronoDateTimeUtc`, `serde_json::Value` only `Json`, ...), and a mismatch
//! on an `Option` field silently becomes `None`. So every DuckDB result type
//! is mapped here to exactly one variant, chosen from the column's *logical*
//! type (which knows `JSON` and `TIMESTAMP WITH TIME ZONE`), never guessed
//! from the value.
//!
//! The project-wide convention: `TIMESTAMPTZ` <-> `DateTimeUtc`,
//! `JSON` <-> `Json`, `HUGEINT` (what `SUM(BIGINT)` returns) -> `BigInt` with
//! a range check, `DECIMAL` -> `Double`.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use duckdb::core::LogicalTypeId;
use duckdb::types::{TimeUnit, Value as DuckValue, ValueRef};
use sea_orm::sea_query::Value;

use crate::error::{AdapterError, Result};

/// Microseconds per second: DuckDB's timestamps have microsecond precision.
const MICROS_PER_SEC: i64 = 1_000_000;

/// Converts a bound sea-query value into the DuckDB value bound in its place.
///
/// Timestamps are bound as native `TIMESTAMP` values (microseconds since the
/// epoch, UTC), which DuckDB casts to `TIMESTAMPTZ` as the same instant; an
/// offset such as `+05:30` is folded into the instant first. Sub-microsecond
/// digits are truncated (DuckDB and PostgreSQL store microseconds). JSON is
/// bound as its text, which DuckDB validates when it casts it to `JSON`.
///
/// # Errors
/// [`AdapterError::UnsupportedValue`] for a variant DuckDB cannot take.
pub fn to_duckdb(value: &Value) -> Result<DuckValue> {
    Ok(match value {
        Value::Bool(v) => v.map_or(DuckValue::Null, DuckValue::Boolean),
        Value::TinyInt(v) => v.map_or(DuckValue::Null, DuckValue::TinyInt),
        Value::SmallInt(v) => v.map_or(DuckValue::Null, DuckValue::SmallInt),
        Value::Int(v) => v.map_or(DuckValue::Null, DuckValue::Int),
        Value::BigInt(v) => v.map_or(DuckValue::Null, DuckValue::BigInt),
        Value::TinyUnsigned(v) => v.map_or(DuckValue::Null, DuckValue::UTinyInt),
        Value::SmallUnsigned(v) => v.map_or(DuckValue::Null, DuckValue::USmallInt),
        Value::Unsigned(v) => v.map_or(DuckValue::Null, DuckValue::UInt),
        Value::BigUnsigned(v) => v.map_or(DuckValue::Null, DuckValue::UBigInt),
        Value::Float(v) => v.map_or(DuckValue::Null, DuckValue::Float),
        Value::Double(v) => v.map_or(DuckValue::Null, DuckValue::Double),
        Value::String(v) => v.clone().map_or(DuckValue::Null, DuckValue::Text),
        Value::Char(v) => v.map_or(DuckValue::Null, |c| DuckValue::Text(c.to_string())),
        Value::Bytes(v) => v.clone().map_or(DuckValue::Null, DuckValue::Blob),
        Value::Json(v) => match v {
            None => DuckValue::Null,
            Some(json) => DuckValue::Text(json.to_string()),
        },
        Value::ChronoDate(Some(d)) => DuckValue::Date32(days_since_epoch(*d)?),
        Value::ChronoDate(None) | Value::ChronoTime(None) => DuckValue::Null,
        Value::ChronoTime(Some(t)) => {
            DuckValue::Time64(TimeUnit::Microsecond, micros_since_midnight(*t)?)
        }
        Value::ChronoDateTime(v) => v.map_or(DuckValue::Null, |dt| timestamp(&dt.and_utc())),
        Value::ChronoDateTimeUtc(v) => v.map_or(DuckValue::Null, |dt| timestamp(&dt)),
        Value::ChronoDateTimeLocal(v) => v.map_or(DuckValue::Null, |dt| timestamp(&dt)),
        Value::ChronoDateTimeWithTimeZone(v) => v.map_or(DuckValue::Null, |dt| timestamp(&dt)),
        other => return Err(AdapterError::UnsupportedValue(format!("{other:?}"))),
    })
}

/// As [`to_duckdb`], taking the value: text and JSON are moved, not copied
/// (for bulk work such as the Appender, where every row is built once).
///
/// # Errors
/// As [`to_duckdb`].
pub fn into_duckdb(value: Value) -> Result<DuckValue> {
    match value {
        Value::String(v) => Ok(v.map_or(DuckValue::Null, DuckValue::Text)),
        Value::Json(Some(json)) => Ok(DuckValue::Text(json.to_string())),
        other => to_duckdb(&other),
    }
}

/// A timestamp as DuckDB's native microsecond value of the same instant.
fn timestamp<Tz: TimeZone>(dt: &DateTime<Tz>) -> DuckValue {
    DuckValue::Timestamp(TimeUnit::Microsecond, dt.timestamp_micros())
}

/// DuckDB's DATE: days since 1970-01-01 as an `i32` (chrono's whole range
/// fits; the error is for the record).
fn days_since_epoch(d: NaiveDate) -> Result<i32> {
    let days = d.signed_duration_since(NaiveDate::default()).num_days();
    i32::try_from(days).map_err(|_| AdapterError::UnsupportedValue(format!("date {d}")))
}

/// DuckDB's TIME: microseconds since midnight (a day always fits).
fn micros_since_midnight(t: NaiveTime) -> Result<i64> {
    t.signed_duration_since(NaiveTime::MIN)
        .num_microseconds()
        .ok_or_else(|| AdapterError::UnsupportedValue(format!("time {t}")))
}

/// How the values of one result column are decoded, fixed per column from
/// its logical type before any row is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Bool,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    /// `HUGEINT`: narrowed to `BigInt`, an error when out of range.
    HugeInt,
    TinyUnsigned,
    SmallUnsigned,
    Unsigned,
    BigUnsigned,
    Float,
    Double,
    Decimal,
    Text,
    Json,
    Blob,
    TimestampTz,
    Timestamp,
    Date,
    Time,
    /// A type this adapter does not map; reading a non-NULL value fails.
    Unsupported(LogicalTypeId),
}

impl ColumnKind {
    pub(crate) fn from_logical(id: LogicalTypeId, alias: Option<&str>) -> Self {
        if alias.is_some_and(|a| a.eq_ignore_ascii_case("json")) {
            return Self::Json;
        }
        match id {
            LogicalTypeId::Boolean => Self::Bool,
            LogicalTypeId::Tinyint => Self::TinyInt,
            LogicalTypeId::Smallint => Self::SmallInt,
            LogicalTypeId::Integer => Self::Int,
            LogicalTypeId::Bigint => Self::BigInt,
            LogicalTypeId::Hugeint => Self::HugeInt,
            LogicalTypeId::UTinyint => Self::TinyUnsigned,
            LogicalTypeId::USmallint => Self::SmallUnsigned,
            LogicalTypeId::UInteger => Self::Unsigned,
            LogicalTypeId::UBigint => Self::BigUnsigned,
            LogicalTypeId::Float => Self::Float,
            LogicalTypeId::Double => Self::Double,
            LogicalTypeId::Decimal => Self::Decimal,
            LogicalTypeId::Varchar | LogicalTypeId::Enum | LogicalTypeId::Uuid => Self::Text,
            LogicalTypeId::Blob => Self::Blob,
            LogicalTypeId::TimestampTZ => Self::TimestampTz,
            LogicalTypeId::Timestamp
            | LogicalTypeId::TimestampS
            | LogicalTypeId::TimestampMs
            | LogicalTypeId::TimestampNs => Self::Timestamp,
            LogicalTypeId::Date => Self::Date,
            LogicalTypeId::Time => Self::Time,
            // `SELECT NULL`: any variant decodes as None.
            LogicalTypeId::SqlNull => Self::Text,
            other => Self::Unsupported(other),
        }
    }

    /// The typed NULL of this column.
    fn null(self) -> Value {
        match self {
            Self::Bool => Value::Bool(None),
            Self::TinyInt => Value::TinyInt(None),
            Self::SmallInt => Value::SmallInt(None),
            Self::Int => Value::Int(None),
            Self::BigInt | Self::HugeInt => Value::BigInt(None),
            Self::TinyUnsigned => Value::TinyUnsigned(None),
            Self::SmallUnsigned => Value::SmallUnsigned(None),
            Self::Unsigned => Value::Unsigned(None),
            Self::BigUnsigned => Value::BigUnsigned(None),
            Self::Float => Value::Float(None),
            Self::Double | Self::Decimal => Value::Double(None),
            Self::Text | Self::Unsupported(_) => Value::String(None),
            Self::Json => Value::Json(None),
            Self::Blob => Value::Bytes(None),
            Self::TimestampTz => Value::ChronoDateTimeUtc(None),
            Self::Timestamp => Value::ChronoDateTime(None),
            Self::Date => Value::ChronoDate(None),
            Self::Time => Value::ChronoTime(None),
        }
    }
}

/// Decodes one value of a result column into the sea-query variant the
/// entities expect.
///
/// # Errors
/// A value that does not fit (a `HUGEINT` beyond `i64`, invalid JSON text in
/// a JSON column, a type this adapter does not map).
pub(crate) fn from_duckdb(column: &str, kind: ColumnKind, value: ValueRef<'_>) -> Result<Value> {
    let mismatch = || AdapterError::Decode {
        column: column.to_owned(),
        reason: format!(
            "unexpected {:?} value in a {kind:?} column",
            value.data_type()
        ),
    };
    if matches!(value, ValueRef::Null) {
        return Ok(kind.null());
    }
    Ok(match (kind, value) {
        (ColumnKind::Bool, ValueRef::Boolean(v)) => Value::Bool(Some(v)),
        (ColumnKind::TinyInt, ValueRef::TinyInt(v)) => Value::TinyInt(Some(v)),
        (ColumnKind::SmallInt, ValueRef::SmallInt(v)) => Value::SmallInt(Some(v)),
        (ColumnKind::Int, ValueRef::Int(v)) => Value::Int(Some(v)),
        (ColumnKind::BigInt, ValueRef::BigInt(v)) => Value::BigInt(Some(v)),
        (ColumnKind::HugeInt, ValueRef::HugeInt(v)) => {
            let narrowed = i64::try_from(v).map_err(|_| AdapterError::Decode {
                column: column.to_owned(),
                reason: format!("HUGEINT {v} does not fit in a 64-bit integer"),
            })?;
            Value::BigInt(Some(narrowed))
        }
        (ColumnKind::TinyUnsigned, ValueRef::UTinyInt(v)) => Value::TinyUnsigned(Some(v)),
        (ColumnKind::SmallUnsigned, ValueRef::USmallInt(v)) => Value::SmallUnsigned(Some(v)),
        (ColumnKind::Unsigned, ValueRef::UInt(v)) => Value::Unsigned(Some(v)),
        (ColumnKind::BigUnsigned, ValueRef::UBigInt(v)) => Value::BigUnsigned(Some(v)),
        (ColumnKind::Float, ValueRef::Float(v)) => Value::Float(Some(v)),
        (ColumnKind::Double, ValueRef::Double(v)) => Value::Double(Some(v)),
        (ColumnKind::Decimal, ValueRef::Decimal(d)) => {
            let scale = 10f64.powi(i32::from(d.scale()));
            // Lossy by nature: DECIMAL has no sea-query variant without the
            // rust_decimal feature. The schema has no DECIMAL column.
            #[allow(clippy::cast_precision_loss)]
            Value::Double(Some(d.value() as f64 / scale))
        }
        (ColumnKind::Decimal, ValueRef::HugeInt(v)) =>
        {
            #[allow(clippy::cast_precision_loss)]
            Value::Double(Some(v as f64))
        }
        (ColumnKind::Text, ValueRef::Text(bytes)) => {
            Value::String(Some(utf8(column, bytes)?.to_owned()))
        }
        (ColumnKind::Json, ValueRef::Text(bytes)) => {
            let json =
                serde_json::from_str(utf8(column, bytes)?).map_err(|e| AdapterError::Decode {
                    column: column.to_owned(),
                    reason: format!("invalid JSON: {e}"),
                })?;
            Value::Json(Some(Box::new(json)))
        }
        (ColumnKind::Blob, ValueRef::Blob(bytes)) => Value::Bytes(Some(bytes.to_vec())),
        (ColumnKind::TimestampTz, ValueRef::Timestamp(unit, t)) => {
            Value::ChronoDateTimeUtc(Some(instant(column, unit.to_micros(t))?))
        }
        (ColumnKind::Timestamp, ValueRef::Timestamp(unit, t)) => {
            Value::ChronoDateTime(Some(instant(column, unit.to_micros(t))?.naive_utc()))
        }
        (ColumnKind::Date, ValueRef::Date32(days)) => {
            let date =
                DateTime::<Utc>::UNIX_EPOCH.date_naive() + chrono::Duration::days(i64::from(days));
            Value::ChronoDate(Some(date))
        }
        (ColumnKind::Time, ValueRef::Time64(unit, t)) => {
            let micros = unit.to_micros(t);
            let secs = u32::try_from(micros.div_euclid(MICROS_PER_SEC)).map_err(|_| mismatch())?;
            let nanos =
                u32::try_from(micros.rem_euclid(MICROS_PER_SEC) * 1_000).map_err(|_| mismatch())?;
            Value::ChronoTime(Some(
                NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos).ok_or_else(mismatch)?,
            ))
        }
        (ColumnKind::Unsupported(id), _) => {
            return Err(AdapterError::Decode {
                column: column.to_owned(),
                reason: format!(
                    "DuckDB type {id:?} is not supported by the adapter; cast it in SQL"
                ),
            });
        }
        _ => return Err(mismatch()),
    })
}

fn utf8<'a>(column: &str, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| AdapterError::Decode {
        column: column.to_owned(),
        reason: format!("text is not UTF-8: {e}"),
    })
}

fn instant(column: &str, micros: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| AdapterError::Decode {
        column: column.to_owned(),
        reason: format!("timestamp {micros}us is outside the supported range"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_fold_into_the_same_instant() {
        let west = DateTime::parse_from_rfc3339("2025-01-05T16:00:03.161-08:00").ok();
        let utc = DateTime::parse_from_rfc3339("2025-01-06T00:00:03.161Z").ok();
        let bound_west = to_duckdb(&Value::ChronoDateTimeWithTimeZone(west)).ok();
        let bound_utc = to_duckdb(&Value::ChronoDateTimeUtc(
            utc.map(|d| d.with_timezone(&Utc)),
        ))
        .ok();
        assert!(bound_west.is_some());
        assert_eq!(bound_west, bound_utc);
    }

    #[test]
    fn hugeint_out_of_range_is_an_error_not_a_wrap() {
        let too_big = ValueRef::HugeInt(i128::from(i64::MAX) + 1);
        assert!(from_duckdb("s", ColumnKind::HugeInt, too_big).is_err());
        let fits = from_duckdb("s", ColumnKind::HugeInt, ValueRef::HugeInt(42)).ok();
        assert_eq!(fits, Some(Value::BigInt(Some(42))));
    }

    #[test]
    fn nulls_are_typed_by_column() {
        let v = from_duckdb("ts", ColumnKind::TimestampTz, ValueRef::Null).ok();
        assert_eq!(v, Some(Value::ChronoDateTimeUtc(None)));
    }
}
