//! Configuration from the environment, read once.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DB_PATH` | DuckDB database file (its directory is created if missing) | `/app/data/exposures.duckdb` |
//! | `RUST_LOG` | log filter for the CLI (logs go to stderr) | `warn` |

use std::path::PathBuf;

pub use migration::commands::DEFAULT_DB_PATH;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DuckDB database file.
    pub db_path: PathBuf,
}

impl Config {
    /// Reads `DB_PATH`, falling back to [`DEFAULT_DB_PATH`] when it is unset
    /// or empty.
    #[must_use]
    pub fn from_env() -> Self {
        let db_path = std::env::var_os("DB_PATH")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DB_PATH), PathBuf::from);
        Self { db_path }
    }
}
