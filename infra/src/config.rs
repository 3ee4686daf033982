//! Which database, from the environment, read once.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | a PostgreSQL server, `postgres://user:password@host:port/database`; when set, it is used instead of `DB_PATH` | unset: DuckDB |
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

/// Where the embedded DuckDB database lives unless `DB_PATH` says otherwise.
pub const DEFAULT_DB_PATH: &str = "/app/data/exposures.duckdb";

/// The engine behind a database connection (both speak the PostgreSQL
/// dialect, so the connection alone cannot tell). A [`Config`] chooses
/// PostgreSQL when it has a `database_url`, DuckDB otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// DuckDB through the project's adapter.
    DuckDb,
    /// A PostgreSQL server through Sea-ORM's native driver.
    Postgres,
}

/// Where the database lives and how DuckDB runs.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// A PostgreSQL server to use instead of the DuckDB file.
    pub database_url: Option<String>,
    /// The DuckDB database file.
    pub db_path: PathBuf,
    /// DuckDB settings.
    pub duckdb: InstanceOptions,
}

impl Config {
    /// Reads `DATABASE_URL`, `DB_PATH` and `DUCKDB_MEMORY_LIMIT`, falling back to the
    /// defaults when they are unset or empty.
    #[must_use]
    pub fn from_env() -> Self {
        let mut config = Self::from_lookup(|name| std::env::var(name).ok());
        // A path need not be UTF-8.
        if let Some(path) = std::env::var_os("DB_PATH").filter(|p| !p.is_empty()) {
            config.db_path = PathBuf::from(path);
        }
        config
    }

    /// As [`Config::from_env`], reading variables through `lookup`.
    #[must_use]
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let db_path = lookup("DB_PATH")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DB_PATH), PathBuf::from);
        let memory_limit = lookup("DUCKDB_MEMORY_LIMIT");
        Self {
            database_url: lookup("DATABASE_URL").filter(|u| !u.is_empty()),
            db_path,
            duckdb: duckdb_options(memory_limit.as_deref()),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("db_path", &self.db_path)
            .field("duckdb", &self.duckdb)
            .finish()
    }
}

/// `url` with the password of its user part replaced by `***`, for messages
/// and logs.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &url[scheme_end + at..]
        ),
        _ => url.to_owned(),
    }
}

/// The DuckDB settings for an optional memory limit (`None` or empty: DuckDB's
/// default).
#[must_use]
pub fn duckdb_options(memory_limit: Option<&str>) -> InstanceOptions {
    InstanceOptions {
        memory_limit: memory_limit.filter(|m| !m.is_empty()).map(str::to_owned),
        threads: None,
        read_only: false,
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
        assert_eq!(set.database_url, None);
    }

    #[test]
    fn passwords_never_reach_messages() {
        let url = "postgres://app:s3cr:et@db.internal:5432/exposures?sslmode=disable";
        assert_eq!(
            redact_url(url),
            "postgres://app:***@db.internal:5432/exposures?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("postgres://db:5432/x"), "postgres://db:5432/x");
        let config = Config::from_lookup(|name| (name == "DATABASE_URL").then(|| url.to_owned()));
        assert_eq!(config.database_url.as_deref(), Some(url));
        assert!(!format!("{config:?}").contains("s3cr"));
    }
}
