//! Errors of the adapter, and the one place where DuckDB's error messages
//! are classified.
//!
//! DuckDB reports errors as text of the form `"<Kind> Error: <detail>"`
//! (`Constraint Error: Duplicate key ...`). The text reaches the caller
//! unchanged inside [`DbErr`]; [`error_kind`] tells constraint violations,
//! write-write conflicts, lock failures and failures of the engine itself
//! apart so callers never match message strings themselves.

use sea_orm::{DbErr, RuntimeErr};

/// Result of adapter operations.
pub type Result<T, E = AdapterError> = std::result::Result<T, E>;

/// What went wrong inside the adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// DuckDB refused a statement; the message is DuckDB's own.
    #[error("{0}")]
    DuckDb(#[from] duckdb::Error),
    /// The database could not be opened (bad path, unusable directory).
    #[error("{0}")]
    Open(String),
    /// A bound value has no DuckDB counterpart.
    #[error("cannot bind {0}: DuckDB has no matching type")]
    UnsupportedValue(String),
    /// A result value could not be decoded into the type Sea-ORM expects.
    #[error("cannot decode column '{column}': {reason}")]
    Decode {
        /// Result column name.
        column: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// A statement of this transaction failed earlier, so DuckDB has aborted
    /// it; committing would silently roll back, so the commit is refused and
    /// the transaction rolled back instead.
    #[error("transaction rolled back: {0}")]
    TransactionAborted(String),
    /// A transaction was misused (a nested BEGIN, a COMMIT without BEGIN).
    #[error("transaction misuse: {0}")]
    TransactionState(&'static str),
    /// The blocking task that ran a DuckDB call panicked or was cancelled.
    #[error("DuckDB worker task failed: {0}")]
    Worker(String),
    /// `COMMIT` itself failed: nothing of the transaction was stored, and the
    /// instance is replaced before its next use (see [`crate::Instance`]).
    #[error("{COMMIT_FAILED}: {0}")]
    CommitFailed(duckdb::Error),
    /// The instance failed and could not be replaced by a fresh one.
    #[error("the DuckDB database is unavailable: {0}")]
    Unavailable(String),
}

/// How the message of [`AdapterError::CommitFailed`] starts.
const COMMIT_FAILED: &str =
    "COMMIT failed (nothing of the transaction was stored; the database is reopened from disk)";

/// DuckDB's own prefixes of errors that say its in-memory state is wrong.
/// `FATAL` errors also invalidate the instance ("database has been
/// invalidated because of a previous fatal error").
const ENGINE_FAILURE_MARKERS: [&str; 3] =
    ["Data Corruption Error", "INTERNAL Error", "FATAL Error"];

impl AdapterError {
    /// Whether this error leaves the instance untrustworthy (see
    /// [`ErrorKind::EngineFailed`]).
    #[must_use]
    pub fn is_engine_failure(&self) -> bool {
        classify_message(&self.to_string()) == ErrorKind::EngineFailed
    }
}

impl AdapterError {
    /// This error as a [`DbErr`] of a statement that returns rows.
    #[must_use]
    pub fn into_query_err(self) -> DbErr {
        DbErr::Query(RuntimeErr::Internal(self.to_string()))
    }

    /// This error as a [`DbErr`] of a statement that returns no rows.
    #[must_use]
    pub fn into_exec_err(self) -> DbErr {
        DbErr::Exec(RuntimeErr::Internal(self.to_string()))
    }
}

impl From<AdapterError> for DbErr {
    fn from(e: AdapterError) -> Self {
        e.into_exec_err()
    }
}

/// The kind of a database error, as far as a caller needs to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A primary key, unique, NOT NULL or CHECK constraint was violated.
    Constraint,
    /// A write-write conflict with a concurrent transaction; retrying the
    /// whole transaction may succeed.
    Conflict,
    /// The database file is locked by another process.
    Locked,
    /// The transaction had already failed and was rolled back.
    Aborted,
    /// DuckDB failed in a way that leaves the instance's in-memory state
    /// untrustworthy: a failed `COMMIT`, data corruption, an internal or a
    /// fatal error. The instance is replaced by a fresh one opened from disk
    /// before its next use, and the unit of work may be run again on it.
    EngineFailed,
    /// Anything else (syntax, catalog, I/O, conversion, ...).
    Other,
}

/// Classifies a [`DbErr`] produced by this adapter (or any DuckDB message
/// inside one).
#[must_use]
pub fn error_kind(err: &DbErr) -> ErrorKind {
    let message = match err {
        DbErr::Exec(RuntimeErr::Internal(m))
        | DbErr::Query(RuntimeErr::Internal(m))
        | DbErr::Conn(RuntimeErr::Internal(m)) => m.as_str(),
        DbErr::Custom(m) => m.as_str(),
        _ => return ErrorKind::Other,
    };
    classify_message(message)
}

/// Why a unit of work must not be committed, once it must not: the first
/// of its statements that failed, or the first reason given to poison it.
/// The units of work of both engines keep one (the DuckDB adapter's
/// connection, and exposure-store's session on PostgreSQL), so both refuse
/// a commit in the same words: "transaction rolled back: " and the reason
/// ([`AdapterError::TransactionAborted`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusal(Option<String>);

impl Refusal {
    /// Records that a statement failed with `error`, unless a reason is
    /// recorded already.
    pub fn statement_failed(&mut self, error: &impl std::fmt::Display) {
        self.0.get_or_insert_with(|| failed_statement(error));
    }

    /// Records `reason`, from a caller that found, outside any statement,
    /// that committing would store something inconsistent; unless a reason
    /// is recorded already.
    pub fn poison(&mut self, reason: &str) {
        self.0.get_or_insert_with(|| reason.to_owned());
    }

    /// Whether the unit of work may be committed.
    ///
    /// # Errors
    /// [`AdapterError::TransactionAborted`] with the recorded reason.
    pub fn check(&self) -> Result<()> {
        match &self.0 {
            Some(reason) => Err(AdapterError::TransactionAborted(reason.clone())),
            None => Ok(()),
        }
    }
}

/// The reason a [`Refusal`] gives for a statement that failed with `error`.
fn failed_statement(error: &impl std::fmt::Display) -> String {
    format!("a statement of this unit of work failed: {error}")
}

/// Classifies a DuckDB error message.
#[must_use]
pub fn classify_message(message: &str) -> ErrorKind {
    // Checked first and anywhere in the message: a transaction refused
    // because an earlier statement failed quotes that statement's error.
    if message.contains(COMMIT_FAILED) || ENGINE_FAILURE_MARKERS.iter().any(|m| message.contains(m))
    {
        ErrorKind::EngineFailed
    } else if message.starts_with("transaction rolled back: ") {
        ErrorKind::Aborted
    } else if message.starts_with("Constraint Error") {
        ErrorKind::Constraint
    } else if message.contains("write-write conflict") || message.contains("Conflict on") {
        ErrorKind::Conflict
    } else if message.contains("Could not set lock on file") {
        ErrorKind::Locked
    } else {
        ErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_duckdb_messages() {
        let dup =
            "Constraint Error: Duplicate key \"event_id: a\" violates primary key constraint.";
        assert_eq!(classify_message(dup), ErrorKind::Constraint);
        let conflict =
            "TransactionContext Error: Catalog write-write conflict on create with \"t\"";
        assert_eq!(classify_message(conflict), ErrorKind::Conflict);
        let parse = "Parser Error: syntax error at or near \"SELEC\"";
        assert_eq!(classify_message(parse), ErrorKind::Other);
        let corrupt = "Data Corruption Error: Corrupted uncompressed string segment: \
                       dictionary offset 9 exceeds dictionary size 4";
        assert_eq!(classify_message(corrupt), ErrorKind::EngineFailed);
        let aborted = AdapterError::TransactionAborted(failed_statement(&corrupt)).to_string();
        assert_eq!(classify_message(&aborted), ErrorKind::EngineFailed);
        let invalidated =
            "FATAL Error: Failed: database has been invalidated because of a previous fatal error.";
        assert_eq!(classify_message(invalidated), ErrorKind::EngineFailed);
        let internal = "INTERNAL Error: Attempted to access index 3 within vector of size 3";
        assert_eq!(classify_message(internal), ErrorKind::EngineFailed);
        let oom = AdapterError::CommitFailed(duckdb::Error::ExecuteReturnedResults);
        assert!(oom.is_engine_failure());
    }

    #[test]
    fn a_refusal_gives_its_first_reason() {
        let mut failed = Refusal::default();
        assert!(failed.check().is_ok());
        failed.statement_failed(&"Parser Error: syntax error");
        failed.poison("too late");
        let refused = failed.check().map_err(|e| e.to_string());
        assert_eq!(
            refused,
            Err(
                "transaction rolled back: a statement of this unit of work failed: \
                 Parser Error: syntax error"
                    .to_owned()
            )
        );
        let mut poisoned = Refusal::default();
        poisoned.poison("half written");
        poisoned.statement_failed(&"Parser Error: syntax error");
        let refused = poisoned.check().map_err(|e| e.to_string());
        assert_eq!(
            refused,
            Err("transaction rolled back: half written".to_owned())
        );
    }
}
