//! The command line's arguments, and the configuration they make with the
//! environment.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use exposure_store::entity::{Severity, Status};
use exposure_store::infra::DatabaseArgs;
use exposure_store::migration::commands::MigrateCommand;
use exposure_store::{Config, DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINE_BYTES};

/// exposure-store: ingest security exposure events and query their state.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// `--db` and `--database-url`, shared with the migration binary.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// DuckDB's memory limit, e.g. 512MB (default: DuckDB's, 80% of RAM). A
    /// file too large to ingest within it is quarantined, not half-written
    /// [env: DUCKDB_MEMORY_LIMIT].
    #[arg(long, global = true)]
    pub memory_limit: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest NDJSON files (and the *.ndjson / *.jsonl files of directories).
    Ingest(IngestArgs),
    /// Run a schema migration verb.
    Migrate {
        /// The verb.
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Create or upgrade the schema (idempotent).
    Init,
    /// List current exposures, newest first.
    Exposures(ExposuresArgs),
    /// Count current exposures by office, severity and status.
    Summary {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List quarantined files and why they failed.
    Quarantine {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read every table and check the current state against the audit log
    /// (exit 1 when anything differs).
    Verify {
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace what differs in the current state with the state computed
    /// from the audit log, in one transaction.
    Rebuild {
        /// Print what changed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write deterministic synthetic events as NDJSON to stdout.
    Generate {
        /// Number of events.
        #[arg(long)]
        events: u64,
        /// Number of distinct exposures (keys).
        #[arg(long, default_value_t = 1_000)]
        exposures: u64,
        /// Number of offices.
        #[arg(long, default_value_t = 20)]
        offices: u64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Arguments of `ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and directories to ingest.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Events staged and upserted per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_size: u64,
    /// Longest accepted line in bytes (its content: the line end and a
    /// leading byte order mark do not count); a longer line quarantines its
    /// file.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES as u64, value_parser = clap::value_parser!(u64).range(2..))]
    pub max_line_bytes: u64,
    /// Print one JSON summary on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `exposures`.
#[derive(Debug, Args)]
pub struct ExposuresArgs {
    /// Only this office.
    #[arg(long)]
    pub office: Option<String>,
    /// Only this status (open, closed, mitigated, accepted).
    #[arg(long)]
    pub status: Option<Status>,
    /// Only this severity (info, low, medium, high, critical).
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Only this exposure class.
    #[arg(long)]
    pub class: Option<String>,
    /// Only exposures last seen at or after this RFC 3339 instant.
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(..=i64::MAX.unsigned_abs()))]
    pub limit: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 timestamp such as 2025-01-05T16:00:00Z: {e}"))
}

/// How a command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Opened as it is (`migrate` is the migration).
    Migrate,
    /// Opened and migrated: the commands that write.
    Write,
    /// Opened read-only (a DuckDB file), the schema checked, never changed.
    Read,
}

impl Cli {
    /// The configuration: these flags, then the environment ([`Config::from_env`]).
    pub(super) fn config(&self, access: Access) -> Config {
        let mut config = self.database.config();
        if let Some(limit) = self.memory_limit.clone().filter(|m| !m.is_empty()) {
            config.duckdb.memory_limit = Some(limit);
        }
        config.duckdb.read_only = access == Access::Read;
        config
    }
}
