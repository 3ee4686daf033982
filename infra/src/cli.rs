//! What both command lines (`exposure-store` and the migration binary) set
//! up and share.

use std::path::PathBuf;

use crate::Config;

/// Sends logs to stderr, filtered by `RUST_LOG` (default `warn`): the set-up
/// of both binaries, `exposure-store` and the migration crate's.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The exit status of both command lines when a command cannot do its work:
/// a usage error (clap's own status for one too), or a database that cannot
/// be opened, migrated or read. Success is 0; `exposure-store` also exits 1
/// when the work was done but found something (a file quarantined, a
/// `verify` difference).
pub const EXIT_ERROR: u8 = 2;

/// The database flags of both command lines (`#[command(flatten)]`), so
/// that they have one name and one meaning in both.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// DuckDB database file, created with its directory if missing [env:
    /// DB_PATH; default: /app/data/exposures.duckdb].
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// PostgreSQL server to use instead of the DuckDB file:
    /// postgres://user:password@host:port/database [env: DATABASE_URL].
    #[arg(long, global = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The configuration: these flags, then the environment
    /// ([`Config::from_env`]). An empty `--database-url` counts as unset.
    #[must_use]
    pub fn config(&self) -> Config {
        let mut config = Config::from_env();
        if let Some(url) = self.database_url.clone().filter(|u| !u.is_empty()) {
            config.database_url = Some(url);
        }
        if let Some(db) = &self.db {
            config.db_path.clone_from(db);
        }
        config
    }
}
