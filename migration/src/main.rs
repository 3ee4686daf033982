//! `cargo run -p migration -- <up|down|status|fresh|refresh|reset>`: the
//! schema migrations against the PostgreSQL server at `DATABASE_URL` when it
//! is set, otherwise the DuckDB database at `DB_PATH`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use migration::commands::{self, DEFAULT_DB_PATH, MigrateCommand};
use sea_orm_migration::sea_orm::DbErr;

#[derive(Debug, Parser)]
#[command(version, about = "Schema migrations of exposure-store")]
struct Args {
    /// DuckDB database file (created, with its directory, if missing).
    #[arg(long, env = "DB_PATH", default_value = DEFAULT_DB_PATH)]
    db_path: PathBuf,
    /// PostgreSQL server (`postgres://user:password@host:port/database`);
    /// when given, `--db-path` is not used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// What to do (default: up).
    #[command(subcommand)]
    command: Option<MigrateCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    migration::init_logging();
    let args = Args::parse();
    let command = args.command.unwrap_or(MigrateCommand::Up { num: None });
    if let Some(url) = args.database_url.filter(|u| !u.is_empty()) {
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
    let opened = duckdb_adapter::ensure_parent_dir(&args.db_path)
        .and_then(|()| duckdb_adapter::Instance::open(&args.db_path));
    let instance = match opened {
        Ok(instance) => instance,
        Err(e) => {
            eprintln!(
                "error: cannot open database '{}': {e}",
                args.db_path.display()
            );
            return ExitCode::from(2);
        }
    };
    match commands::run_on_duckdb(&instance, command).await {
        Ok(states) => {
            print!("{}", commands::render(&states));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: migration failed on '{}': {e}",
                args.db_path.display()
            );
            ExitCode::FAILURE
        }
    }
}
