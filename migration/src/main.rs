//! `cargo run -p migration -- <up|down|status|fresh|refresh|reset>`: the
//! schema migrations against the PostgreSQL server at `DATABASE_URL` when it
//! is set, otherwise the DuckDB database at `DB_PATH`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use infra::DEFAULT_DB_PATH;
use migration::commands::{self, MigrateCommand};
use sea_orm_migration::sea_orm::DbErr;

#[derive(Debug, Parser)]
#[command(version, about = "Schema migrations of exposure-store")]
struct Args {
    /// DuckDB database file, created with its directory if missing [env:
    /// DB_PATH; default: /app/data/exposures.duckdb].
    #[arg(long)]
    db_path: Option<PathBuf>,
    /// PostgreSQL server (`postgres://user:password@host:port/database`);
    /// when given, `--db-path` is not used [env: DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
    /// What to do (default: up).
    #[command(subcommand)]
    command: Option<MigrateCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    infra::init_logging();
    let args = Args::parse();
    let command = args.command.unwrap_or(MigrateCommand::Up { num: None });
    // A variable set but empty counts as unset.
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let database_url = args
        .database_url
        .filter(|u| !u.is_empty())
        .or_else(|| env("DATABASE_URL").and_then(|u| u.into_string().ok()));
    let db_path = args
        .db_path
        .or_else(|| env("DB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH));
    if let Some(url) = database_url {
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
