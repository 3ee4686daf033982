//! Active enums shared by the exposure tables.
//!
//! All three enums are stored as plain text (`db_type = "String(StringLen::None)"`)
//! rather than as native database enum types, so the same schema works on DuckDB
//! and PostgreSQL; the migrations restrict the allowed values with `CHECK`
//! constraints instead. The stored value is the lowercase variant name, which is
//! also the serde representation and the [`Display`](std::fmt::Display) output.
//! Parsing with [`std::str::FromStr`] accepts any ASCII case.

use std::fmt;
use std::str::FromStr;

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Error returned when parsing text that is not a known variant of one of the
/// enums of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    /// Which enum was being parsed (`"severity"`, `"status"` or `"event action"`).
    pub kind: &'static str,
    /// The text that did not match any variant.
    pub value: String,
}

impl UnknownVariant {
    /// Expected values of the enum named by [`UnknownVariant::kind`], as shown in
    /// the error message.
    fn expected(&self) -> &'static [&'static str] {
        match self.kind {
            Severity::KIND => &Severity::NAMES,
            Status::KIND => &Status::NAMES,
            EventAction::KIND => &EventAction::NAMES,
            _ => &[],
        }
    }
}

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An absurd value (a whole megabyte) is shown by its start only.
        const SHOWN: usize = 60;
        let shown: String = self.value.chars().take(SHOWN).collect();
        let more = if self.value.chars().nth(SHOWN).is_some() {
            "..."
        } else {
            ""
        };
        write!(
            f,
            "unknown {} '{shown}{more}' (expected one of: {})",
            self.kind,
            self.expected().join(", ")
        )
    }
}

impl std::error::Error for UnknownVariant {}

/// Implements `as_str`, `ALL`, `Display` and case-insensitive `FromStr` for a
/// text-backed active enum. The variant list must match the `string_value`s of
/// the enum, in declaration order.
macro_rules! text_enum_impls {
    ($ty:ident, $kind:literal, $n:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: [Self; $n] = [$(Self::$variant),+];

            /// Name used for this enum in [`UnknownVariant`] errors.
            const KIND: &'static str = $kind;

            /// Stored text of every variant, in declaration order.
            const NAMES: [&'static str; $n] = [$($text),+];

            /// The text stored in the database for this variant (lowercase).
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownVariant;

            /// Parses the stored text of a variant, ignoring ASCII case.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| UnknownVariant {
                        kind: Self::KIND,
                        value: s.to_owned(),
                    })
            }
        }
    };
}

/// Severity of an exposure.
///
/// Variants are declared from least to most severe, so the derived [`Ord`]
/// is the severity order (`Info < Low < Medium < High < Critical`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational finding, no direct risk (`"info"`).
    #[sea_orm(string_value = "info")]
    Info,
    /// Low severity (`"low"`).
    #[sea_orm(string_value = "low")]
    Low,
    /// Medium severity (`"medium"`).
    #[sea_orm(string_value = "medium")]
    Medium,
    /// High severity (`"high"`).
    #[sea_orm(string_value = "high")]
    High,
    /// Critical severity (`"critical"`).
    #[sea_orm(string_value = "critical")]
    Critical,
}

text_enum_impls!(Severity, "severity", 5, [
    Info => "info",
    Low => "low",
    Medium => "medium",
    High => "high",
    Critical => "critical",
]);

/// Lifecycle status of an exposure.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The exposure is present and unresolved (`"open"`).
    #[sea_orm(string_value = "open")]
    Open,
    /// The exposure is no longer observed (`"closed"`).
    #[sea_orm(string_value = "closed")]
    Closed,
    /// The exposure is still present but a compensating control is in place
    /// (`"mitigated"`).
    #[sea_orm(string_value = "mitigated")]
    Mitigated,
    /// The exposure is a known, accepted risk (`"accepted"`).
    #[sea_orm(string_value = "accepted")]
    Accepted,
}

text_enum_impls!(Status, "status", 4, [
    Open => "open",
    Closed => "closed",
    Mitigated => "mitigated",
    Accepted => "accepted",
]);

/// What an exposure event did to the state of its exposure.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// The exposure was seen for the first time (`"opened"`).
    #[sea_orm(string_value = "opened")]
    Opened,
    /// An already open exposure changed or was seen again (`"updated"`).
    #[sea_orm(string_value = "updated")]
    Updated,
    /// The exposure was closed (`"closed"`).
    #[sea_orm(string_value = "closed")]
    Closed,
    /// A previously closed exposure was seen again (`"reopened"`).
    #[sea_orm(string_value = "reopened")]
    Reopened,
}

text_enum_impls!(EventAction, "event action", 4, [
    Opened => "opened",
    Updated => "updated",
    Closed => "closed",
    Reopened => "reopened",
]);

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ActiveEnum;
    use sea_orm::strum::IntoEnumIterator;

    #[test]
    fn as_str_matches_active_enum_value_and_serde() {
        for v in Severity::ALL {
            assert_eq!(v.to_value(), v.as_str());
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::Value::String(v.as_str().to_owned()))
            );
        }
        for v in Status::ALL {
            assert_eq!(v.to_value(), v.as_str());
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::Value::String(v.as_str().to_owned()))
            );
        }
        for v in EventAction::ALL {
            assert_eq!(v.to_value(), v.as_str());
            assert_eq!(
                serde_json::to_value(v).ok(),
                Some(serde_json::Value::String(v.as_str().to_owned()))
            );
        }
    }

    #[test]
    fn all_matches_enum_iter() {
        assert_eq!(Severity::iter().collect::<Vec<_>>(), Severity::ALL.to_vec());
        assert_eq!(Status::iter().collect::<Vec<_>>(), Status::ALL.to_vec());
        assert_eq!(
            EventAction::iter().collect::<Vec<_>>(),
            EventAction::ALL.to_vec()
        );
    }

    #[test]
    fn parse_ignores_ascii_case() {
        assert_eq!("HIGH".parse::<Severity>(), Ok(Severity::High));
        assert_eq!("Mitigated".parse::<Status>(), Ok(Status::Mitigated));
        assert_eq!("reOpened".parse::<EventAction>(), Ok(EventAction::Reopened));
    }

    #[test]
    fn severity_order() {
        assert!(Severity::Info < Severity::Low);
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
    }

    #[test]
    fn unknown_variant_message() {
        let err = "urgent".parse::<Severity>().err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("unknown severity 'urgent' (expected one of: info, low, medium, high, critical)")
        );
        let err = "x".parse::<EventAction>().err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("unknown event action 'x' (expected one of: opened, updated, closed, reopened)")
        );
        let huge = "é".repeat(1 << 20);
        let message = huge
            .parse::<Status>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.len() < 300,
            "the message repeats a megabyte: {} bytes",
            message.len()
        );
        assert!(message.starts_with(&format!("unknown status '{}...'", "é".repeat(60))));
    }
}
