//! Why a file is rejected: the category stored in
//! `quarantined_files.error_type`, the message and the details.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

/// Why a file was rejected, as stored in `quarantined_files.error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// A line is not valid JSON.
    InvalidJson,
    /// A line is JSON but not a valid event (missing field, wrong type,
    /// unknown severity, bad timestamp, ...).
    InvalidEvent,
    /// The file is not UTF-8.
    InvalidEncoding,
    /// A line exceeds the line-length limit.
    LineTooLong,
    /// The file holds no events.
    EmptyFile,
    /// The file could not be read.
    IoError,
    /// The database refused the file's events.
    DatabaseError,
}

impl ErrorType {
    /// The stored name (`invalid_json`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidEvent => "invalid_event",
            Self::InvalidEncoding => "invalid_encoding",
            Self::LineTooLong => "line_too_long",
            Self::EmptyFile => "empty_file",
            Self::IoError => "io_error",
            Self::DatabaseError => "database_error",
        }
    }
}

/// A file's rejection: category, message, and details pointing at the
/// problem (line, column, field, reason).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Category.
    pub error_type: ErrorType,
    /// Human-readable explanation, starting with the line when there is one.
    pub message: String,
    /// Machine-readable details.
    pub details: serde_json::Value,
}

impl Rejection {
    pub(super) fn at_line(
        error_type: ErrorType,
        line: u64,
        reason: String,
        extra: serde_json::Value,
    ) -> Self {
        let reason = shortened(reason);
        let mut details = json!({ "line": line, "reason": reason });
        if let (Some(d), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra) {
            d.extend(extra);
        }
        let field = details
            .get("field")
            .and_then(|f| f.as_str())
            .map(|f| format!(" field '{f}':"));
        Self {
            error_type,
            message: format!("line {line}:{} {reason}", field.unwrap_or_default()),
            details,
        }
    }

    pub(super) fn io(path: &Path, e: &std::io::Error) -> Self {
        Self {
            error_type: ErrorType::IoError,
            message: format!("cannot read '{}': {e}", path.display()),
            details: json!({ "reason": e.to_string(), "kind": format!("{:?}", e.kind()) }),
        }
    }
}

/// Longest reason kept in a rejection, in characters: serde's messages
/// quote the offending value, which can be megabytes long.
const MAX_REASON_CHARS: usize = 300;

fn shortened(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}... ({} bytes in all)", &reason[..cut], reason.len()),
        None => reason,
    }
}
