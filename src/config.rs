//! Configuration from the environment, read once.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DB_PATH` | DuckDB database file (its directory is created if missing) | `/app/data/exposures.duckdb` |
//! | `DUCKDB_MEMORY_LIMIT` | DuckDB's memory limit, e.g. `512MB` (see below) | DuckDB's own: 80% of RAM |
//! | `RUST_LOG` | log filter for the CLI (logs go to stderr) | `warn` |
//!
//! A file is ingested in one transaction, and DuckDB keeps what the
//! transaction changes in its indexes in memory until commit. A memory limit
//! caps DuckDB; a file that does not fit is quarantined with DuckDB's "Out of
//! Memory" message rather than taking the machine's memory (see the README's
//! configuration section for measurements).

use std::path::PathBuf;

use duckdb_adapter::InstanceOptions;
pub use migration::commands::DEFAULT_DB_PATH;

/// Where the database lives and how DuckDB runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DuckDB database file.
    pub db_path: PathBuf,
    /// DuckDB settings.
    pub duckdb: InstanceOptions,
}

impl Config {
    /// Reads `DB_PATH` and `DUCKDB_MEMORY_LIMIT`, falling back to the
    /// defaults when they are unset or empty.
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Config::from_env`], reading variables through `lookup`.
    #[must_use]
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let db_path = lookup("DB_PATH")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DB_PATH), PathBuf::from);
        let memory_limit = lookup("DUCKDB_MEMORY_LIMIT");
        Self {
            db_path,
            duckdb: duckdb_options(memory_limit.as_deref()),
        }
    }
}

/// The DuckDB settings for an optional memory limit (`None` or empty: DuckDB's
/// default).
#[must_use]
pub fn duckdb_options(memory_limit: Option<&str>) -> InstanceOptions {
    InstanceOptions {
        memory_limit: memory_limit.filter(|m| !m.is_empty()).map(str::to_owned),
        threads: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_variables_fall_back_to_the_defaults() {
        let unset = Config::from_lookup(|_| None);
        assert_eq!(unset.db_path, PathBuf::from("/app/data/exposures.duckdb"));
        assert_eq!(unset.duckdb.memory_limit, None);
        let empty = Config::from_lookup(|_| Some(String::new()));
        assert_eq!(empty, unset);
        let set = Config::from_lookup(|name| match name {
            "DB_PATH" => Some("/srv/x.duckdb".to_owned()),
            "DUCKDB_MEMORY_LIMIT" => Some("1GB".to_owned()),
            _ => None,
        });
        assert_eq!(set.db_path, PathBuf::from("/srv/x.duckdb"));
        assert_eq!(set.duckdb.memory_limit.as_deref(), Some("1GB"));
    }
}
