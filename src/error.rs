//! The library's error type.

use std::path::PathBuf;

use duckdb_adapter::{AdapterError, ErrorKind};
use sea_orm::DbErr;

/// Result of exposure-store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in exposure-store's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened: a bad path, a directory that cannot
    /// be created, or a file locked by another process.
    #[error("cannot open database '{}': {reason}", path.display())]
    Open {
        /// The path as given.
        path: PathBuf,
        /// Why (DuckDB's message when it refused the file).
        reason: String,
    },
    /// The PostgreSQL server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The driver's message.
        reason: String,
    },
    /// A primary key, unique, NOT NULL or CHECK constraint was violated.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// A write-write conflict (DuckDB), a serialization failure or a
    /// deadlock (PostgreSQL) with a concurrent transaction; the whole unit of
    /// work may be retried.
    #[error("write conflict with a concurrent transaction: {0}")]
    Conflict(String),
    /// A statement of the unit of work failed, so it was rolled back instead
    /// of committed (even though the work itself returned `Ok`).
    #[error("{0}")]
    Aborted(String),
    /// The schema is not the one this build works with, and the command
    /// may not change it (it opened the database read-only).
    #[error("the database schema is not current: {0}")]
    SchemaNotCurrent(String),
    /// Applying or inspecting migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[source] DbErr),
    /// A bug in exposure-store itself (a statement that could not be built,
    /// a stored value outside its vocabulary).
    #[error("internal error: {0}")]
    Internal(String),
    /// DuckDB failed in a way that leaves its in-memory state
    /// untrustworthy: a failed COMMIT, data corruption, an internal or a
    /// fatal error. Nothing of the unit of work was stored (a failed COMMIT
    /// stores nothing), and the instance is closed and the file reopened
    /// from disk before its next use, so running the unit of work again may
    /// succeed.
    #[error("the database engine failed: {0}")]
    EngineFailed(String),
    /// The database cannot be used any more: its DuckDB instance failed
    /// and the file could not be reopened.
    #[error("{0}")]
    Unavailable(String),
    /// Any other database error, with the database's own message.
    #[error("database error: {0}")]
    Database(#[source] DbErr),
}

impl Error {
    /// Whether running the whole unit of work again may succeed: a conflict
    /// with a concurrent transaction, or a failure of the DuckDB engine
    /// (the next attempt runs on a fresh instance).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict(_) | Self::EngineFailed(_))
    }
}

/// Errors that can tell whether [`crate::retry_conflicts`] should run the
/// failed unit of work again: a conflict with a concurrent unit of work,
/// which a new attempt after a short wait usually avoids.
pub trait Retryable {
    /// Whether the failure was such a conflict.
    fn is_retryable(&self) -> bool;
}

impl Retryable for Error {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        let kind = match sqlstate(&err) {
            Some(code) => postgres_kind(&code),
            None => duckdb_adapter::error_kind(&err),
        };
        match kind {
            ErrorKind::Constraint => Self::Constraint(inner_message(&err)),
            ErrorKind::Conflict => Self::Conflict(inner_message(&err)),
            ErrorKind::Aborted => Self::Aborted(inner_message(&err)),
            ErrorKind::EngineFailed => Self::EngineFailed(inner_message(&err)),
            _ => Self::Database(err),
        }
    }
}

impl From<AdapterError> for Error {
    fn from(err: AdapterError) -> Self {
        match err {
            _ if err.is_engine_failure() => Self::EngineFailed(err.to_string()),
            AdapterError::TransactionAborted(_) => Self::Aborted(err.to_string()),
            AdapterError::Unavailable(_) => Self::Unavailable(err.to_string()),
            other => Self::from(other.into_exec_err()),
        }
    }
}

/// The SQLSTATE of an error reported by a PostgreSQL server.
fn sqlstate(err: &DbErr) -> Option<String> {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx;
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => match &**e {
            sqlx::Error::Database(db) => db.code().map(std::borrow::Cow::into_owned),
            _ => None,
        },
        _ => None,
    }
}

/// PostgreSQL's error classes in the adapter's vocabulary: class 23 is an
/// integrity constraint; 40001 (serialization failure) and 40P01 (deadlock)
/// are worth retrying; 25P02 is a statement sent after one had failed.
fn postgres_kind(code: &str) -> ErrorKind {
    match code {
        "40001" | "40P01" => ErrorKind::Conflict,
        "25P02" => ErrorKind::Aborted,
        c if c.starts_with("23") => ErrorKind::Constraint,
        _ => ErrorKind::Other,
    }
}

/// The database's message without Sea-ORM's "Execution Error: " prefix.
pub(crate) fn inner_message(err: &DbErr) -> String {
    match err {
        DbErr::Exec(inner) | DbErr::Query(inner) | DbErr::Conn(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes_map_to_kinds() {
        assert_eq!(postgres_kind("40P01"), ErrorKind::Conflict);
        assert_eq!(postgres_kind("40001"), ErrorKind::Conflict);
        assert_eq!(postgres_kind("23505"), ErrorKind::Constraint);
        assert_eq!(postgres_kind("23514"), ErrorKind::Constraint);
        assert_eq!(postgres_kind("25P02"), ErrorKind::Aborted);
        assert_eq!(postgres_kind("42601"), ErrorKind::Other);
    }
}
