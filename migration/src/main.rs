//! `cargo run -p migration -- <up|down|status|fresh|refresh|reset>`: the
//! schema migrations against the PostgreSQL server at `--database-url` (or
//! `DATABASE_URL`) when it is set, otherwise the DuckDB database at `--db`
//! (or `DB_PATH`). The flags and their environment are `exposure-store`'s
//! ([`infra::DatabaseArgs`]), and so is the exit status: 0 when the verb
//! ran, 2 ([`infra::EXIT_ERROR`]) for usage errors and when the database
//! cannot be opened or migrated.

use std::process::ExitCode;

use clap::Parser;
use infra::{DatabaseArgs, EXIT_ERROR};
use migration::commands::{self, MigrateCommand, MigrationState};
use sea_orm_migration::sea_orm::DbErr;

#[derive(Debug, Parser)]
#[command(version, about = "Schema migrations of exposure-store")]
// `--db-path`: this binary's former name for `--db`, still taken (hidden).
#[command(mut_arg("db", |arg| arg.alias("db-path")))]
struct Args {
    /// `--db` and `--database-url`, shared with `exposure-store`.
    #[command(flatten)]
    database: DatabaseArgs,
    /// What to do (default: up).
    #[command(subcommand)]
    command: Option<MigrateCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    infra::init_logging();
    match migrate(Args::parse()).await {
        Ok(states) => {
            print!("{}", commands::render(&states));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs the verb on the database `args` name; what went wrong, for the
/// message.
async fn migrate(args: Args) -> Result<Vec<MigrationState>, String> {
    let command = args.command.unwrap_or(MigrateCommand::Up { num: None });
    let config = args.database.config();
    if let Some(url) = config.database_url {
        return commands::run_on_postgres(&url, command)
            .await
            .map_err(|e| match e {
                DbErr::Conn(_) => format!("cannot connect to PostgreSQL: {e}"),
                _ => format!("migration failed on PostgreSQL: {e}"),
            });
    }
    // DuckDB's settings as `exposure-store` reads them (`DUCKDB_MEMORY_LIMIT`):
    // a migration that rewrites a large table runs within the same limit.
    let db_path = config.db_path;
    let instance = duckdb_adapter::ensure_parent_dir(&db_path)
        .and_then(|()| duckdb_adapter::Instance::open_with(&db_path, &config.duckdb))
        .map_err(|e| format!("cannot open database '{}': {e}", db_path.display()))?;
    commands::run_on_duckdb(&instance, command)
        .await
        .map_err(|e| format!("migration failed on '{}': {e}", db_path.display()))
}
