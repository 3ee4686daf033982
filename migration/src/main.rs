//! `cargo run -p migration -- <up|down|status|fresh|refresh|reset>`: the
//! schema migrations against the PostgreSQL server at `--database-url` (or
//! `DATABASE_URL`) when it is set, otherwise the DuckDB database at `--db`
//! (or `DB_PATH`). The flags and their environment are `exposure-store`'s
//! ([`infra::DatabaseArgs`]).

use std::process::ExitCode;

use clap::Parser;
use infra::DatabaseArgs;
use migration::commands::{self, MigrateCommand};
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
    let args = Args::parse();
    let command = args.command.unwrap_or(MigrateCommand::Up { num: None });
    let config = args.database.config();
    if let Some(url) = config.database_url {
        return match commands::run_on_postgres(&url, command).await {
            Ok(states) => {
                print!("{}", commands::render(&states));
                ExitCode::SUCCESS
            }
            Err(e @ DbErr::Conn(_)) => {
                eprintln!("error: cannot connect to PostgreSQL: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: migration failed on PostgreSQL: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // DuckDB's default settings: `DUCKDB_MEMORY_LIMIT` (`config.duckdb`)
    // is `exposure-store`'s, not this binary's.
    let db_path = config.db_path;
    let opened = duckdb_adapter::ensure_parent_dir(&db_path)
        .and_then(|()| duckdb_adapter::Instance::open(&db_path));
    let instance = match opened {
        Ok(instance) => instance,
        Err(e) => {
            eprintln!("error: cannot open database '{}': {e}", db_path.display());
            return ExitCode::from(2);
        }
    };
    match commands::run_on_duckdb(&instance, command).await {
        Ok(states) => {
            print!("{}", commands::render(&states));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: migration failed on '{}': {e}", db_path.display());
            ExitCode::FAILURE
        }
    }
}
