//! Errors of the adapter, and the one place where DuckDB's error messages
//! are classified.
//!
//! DuckDB reports errors as text of the form `"<Kind> Error: <detail>"`
//! (`Constraint Error: Duplicate key ...`). The text reaches the caller
//! unchanged inside [`DbErr`]; [`error_kind`] tells constraint violations,
//! write-write conflicts and lock failures apart so callers never match
//! message strings themselves.

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
    #[error("transaction rolled back: an earlier statement in it failed: {0}")]
    TransactionAborted(String),
    /// A transaction was misused (a nested BEGIN, a COMMIT without BEGIN).
    #[error("transaction misuse: {0}")]
    TransactionState(&'static str),
    /// The caller declared the transaction unfit to commit.
    #[error("{0}")]
    Poisoned(String),
    /// The blocking task that ran a DuckDB call panicked or was cancelled.
    #[error("DuckDB worker task failed: {0}")]
    Worker(String),
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

/// Classifies a DuckDB error message.
#[must_use]
pub fn classify_message(message: &str) -> ErrorKind {
    if message.starts_with("transaction rolled back: ") {
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
    }
}
