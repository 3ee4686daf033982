//! The migration verbs, shared by this crate's binary and `exposure-store
//! migrate`.
//!
//! sea-orm-migration's own CLI runner cannot be used as is: its `fresh`
//! queries `pg_type ... ::regclass`, which DuckDB does not have, and it
//! installs a global tracing subscriber (a panic when the host program has
//! one). The verbs and their meaning are the same as upstream's.

use infra::{Engine, connect_postgres};
use sea_orm_migration::MigratorTrait;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait,
};

use crate::Migrator;

/// A migration verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum MigrateCommand {
    /// Apply pending migrations (all, or the first N).
    Up {
        /// Number of pending migrations to apply.
        #[arg(short, long)]
        num: Option<u32>,
    },
    /// Roll back applied migrations (the last one, or the last N).
    Down {
        /// Number of applied migrations to roll back.
        #[arg(short, long, default_value_t = 1)]
        num: u32,
    },
    /// List every migration and whether it is applied.
    Status,
    /// Drop every table and sequence of the schema, then apply all migrations.
    Fresh,
    /// Roll back all applied migrations, then apply all migrations.
    Refresh,
    /// Roll back all applied migrations.
    Reset,
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// The migration's name (its module name).
    pub name: String,
    /// Whether it is recorded as applied.
    pub applied: bool,
}

/// How a database's schema compares with this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// This build's migrations the database has not applied, in order
    /// (all of them when it has no schema at all).
    pub pending: Vec<String>,
    /// Migrations the database has applied that this build does not know
    /// (it was written by a newer version).
    pub unknown: Vec<String>,
}

impl SchemaStatus {
    /// Whether the schema is exactly this build's.
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty()
    }
}

/// The schema status of `db`, read without writing anything (unlike
/// [`status`], which creates `seaql_migrations` when it is missing): what
/// a read-only command checks before it queries.
///
/// # Errors
/// The database's error.
pub async fn schema_status<C: ConnectionTrait>(db: &C) -> Result<SchemaStatus, DbErr> {
    use sea_orm_migration::sea_query::{Alias, Expr, ExprTrait, Query};
    let table = "seaql_migrations";
    let mut exists = Query::select();
    exists
        .expr(Expr::col(Alias::new("table_name")))
        .from((Alias::new("information_schema"), Alias::new("tables")))
        .and_where(Expr::col(Alias::new("table_name")).eq(table))
        .and_where(Expr::col(Alias::new("table_schema")).eq(Expr::cust("current_schema()")));
    let applied: Vec<String> = if db.query_one(&exists).await?.is_some() {
        let mut versions = Query::select();
        versions
            .column(Alias::new("version"))
            .from(Alias::new(table));
        db.query_all(&versions)
            .await?
            .iter()
            .map(|row| row.try_get::<String>("", "version"))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    Ok(SchemaStatus {
        pending: known
            .iter()
            .filter(|name| !applied.contains(name))
            .cloned()
            .collect(),
        unknown: applied
            .into_iter()
            .filter(|name| !known.contains(name))
            .collect(),
    })
}

/// Runs `command` and returns the state of every migration afterwards.
///
/// # Errors
/// The first database error; a migration that fails is rolled back.
pub async fn run(
    db: &DatabaseConnection,
    engine: Engine,
    command: MigrateCommand,
) -> Result<Vec<MigrationState>, DbErr> {
    match command {
        MigrateCommand::Up { num } => Migrator::up(db, num).await?,
        MigrateCommand::Down { num } => Migrator::down(db, Some(num)).await?,
        MigrateCommand::Status => {}
        MigrateCommand::Fresh => {
            drop_everything(db, engine).await?;
            Migrator::up(db, None).await?;
        }
        MigrateCommand::Refresh => Migrator::refresh(db).await?,
        MigrateCommand::Reset => Migrator::reset(db).await?,
    }
    status(db).await
}

/// The state of every migration.
///
/// # Errors
/// A database error, or a migration recorded as applied whose code is
/// missing.
pub async fn status(db: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    Ok(Migrator::get_migration_with_status(db)
        .await?
        .iter()
        .map(|m| MigrationState {
            name: m.name().to_owned(),
            applied: m.status() == sea_orm_migration::MigrationStatus::Applied,
        })
        .collect())
}

/// Runs `command` on a DuckDB instance, on a dedicated connection, holding
/// the instance's schema lock so concurrent callers in this process take
/// turns (DuckDB's file lock keeps other processes out).
///
/// # Errors
/// As [`run`]; also a failed `BEGIN`/`COMMIT` that the proxy connection
/// could not report at the time.
pub async fn run_on_duckdb(
    instance: &duckdb_adapter::Instance,
    command: MigrateCommand,
) -> Result<Vec<MigrationState>, DbErr> {
    let _schema = instance.schema_lock().lock().await;
    let conn = instance
        .connect()
        .map_err(duckdb_adapter::AdapterError::into_exec_err)?;
    let (db, guard) = duckdb_adapter::database_connection(conn).await?;
    guard.finish(run(&db, Engine::DuckDb, command).await)
}

/// The key of the session-level advisory lock that migrations hold on
/// PostgreSQL (an arbitrary constant: "exposure" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6578_706f_7375_7265;

/// Runs `command` on the PostgreSQL database at `url`, on a dedicated
/// connection holding an advisory lock, so that migrations started at the
/// same time by several processes take turns.
///
/// # Errors
/// As [`run`], or the server cannot be reached.
pub async fn run_on_postgres(
    url: &str,
    command: MigrateCommand,
) -> Result<Vec<MigrationState>, DbErr> {
    let db = connect_postgres(url, 1).await?;
    let lock = |function: &str| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT {function}($1)"),
            [MIGRATION_LOCK_KEY.into()],
        )
    };
    db.execute_raw(lock("pg_advisory_lock")).await?;
    let result = run(&db, Engine::Postgres, command).await;
    // Closing the connection releases the lock too; unlocking first keeps
    // a pooled connection from carrying it if closing is delayed.
    let unlocked = db.execute_raw(lock("pg_advisory_unlock")).await;
    db.close().await?;
    let states = result?;
    unlocked?;
    Ok(states)
}

/// Renders migration states as the lines `status` prints.
#[must_use]
pub fn render(states: &[MigrationState]) -> String {
    states
        .iter()
        .map(|s| {
            format!(
                "{:<8} {}\n",
                if s.applied { "applied" } else { "pending" },
                s.name
            )
        })
        .collect()
}

/// Drops every table and sequence of the current schema, in one transaction.
async fn drop_everything(db: &DatabaseConnection, engine: Engine) -> Result<(), DbErr> {
    const TABLES: &str = "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'";
    let sequences = match engine {
        Engine::DuckDb => {
            "SELECT sequence_name FROM duckdb_sequences() \
             WHERE schema_name = current_schema() AND NOT temporary"
        }
        Engine::Postgres => {
            "SELECT sequence_name FROM information_schema.sequences \
             WHERE sequence_schema = current_schema()"
        }
    };
    let txn = db.begin().await?;
    for table in names(&txn, TABLES, "table_name").await? {
        let mut drop = sea_orm_migration::sea_query::Table::drop();
        drop.table(sea_orm_migration::sea_query::Alias::new(table))
            .if_exists()
            .cascade();
        txn.execute(&drop).await?;
    }
    for sequence in names(&txn, sequences, "sequence_name").await? {
        // No sea-query builder for sequences: the name is a catalog
        // identifier, quoted as one (never a value).
        let sql = format!("DROP SEQUENCE IF EXISTS {}", quote_identifier(&sequence));
        txn.execute_unprepared(&sql).await?;
    }
    txn.commit().await
}

async fn names<C: ConnectionTrait>(db: &C, sql: &str, column: &str) -> Result<Vec<String>, DbErr> {
    db.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, []))
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", column))
        .collect()
}

/// Quotes an SQL identifier (double quotes, embedded quotes doubled).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_identifier;

    #[test]
    fn identifiers_are_quoted_not_spliced() {
        assert_eq!(quote_identifier("seq"), "\"seq\"");
        assert_eq!(quote_identifier("a\"; DROP"), "\"a\"\"; DROP\"");
    }
}
