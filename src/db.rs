//! The database handle and its units of work.
//!
//! [`Database`] is the Rust shape of the Python seed's `get_engine()` /
//! `get_session_factory()`: a cheap, cloneable handle built once and passed
//! around. [`Database::transaction`] is `get_db_session()`: a closure-scoped
//! unit of work ([`Session`]) that commits when the work returns `Ok` and
//! rolls back on `Err`, on panic, and when its future is dropped.
//! [`Database::init`] is `init_database()`: it applies the migrations and is
//! safe to call any number of times, also concurrently.
//!
//! Every unit of work runs on its own DuckDB connection, so statements of
//! concurrent units of work never interleave on one transaction, and both
//! `Database` and `Session` implement Sea-ORM's [`ConnectionTrait`]: entity
//! queries (`Entity::find()...all(&db)`), `ActiveModel::insert`,
//! `insert_many`, pagination and `count` work on either.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use duckdb_adapter::{DuckDbConnection, Instance, InstanceOptions};
use migration::commands::{MigrateCommand, MigrationState};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement};

use crate::config::Config;
use crate::error::{Error, Result};

/// Idle autocommit connections kept for statements run on the handle itself.
const MAX_IDLE_CONNECTIONS: usize = 8;

/// A handle to one exposure-store database. Clones share everything.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    instance: Instance,
    /// Autocommit connections for statements run on the handle itself.
    idle: Mutex<Vec<DuckDbConnection>>,
}

impl Database {
    /// Opens (or creates) the DuckDB database file at `path`, creating its
    /// parent directory if needed. Opening a file that is already open in
    /// this process shares its instance.
    ///
    /// The schema is not touched: call [`Database::init`] to apply the
    /// migrations.
    ///
    /// # Errors
    /// [`Error::Open`] when the directory cannot be created or DuckDB
    /// refuses the file (for example another process holds its lock).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &InstanceOptions::default())
    }

    /// As [`Database::open`], with DuckDB settings (applied when this call
    /// opens the file; an instance already open in the process is shared
    /// as it is).
    ///
    /// # Errors
    /// As [`Database::open`], or an invalid setting.
    pub fn open_with(path: impl AsRef<Path>, options: &InstanceOptions) -> Result<Self> {
        let path = path.as_ref();
        let open_err = |reason: String| Error::Open {
            path: path.to_path_buf(),
            reason,
        };
        duckdb_adapter::ensure_parent_dir(path).map_err(|e| open_err(e.to_string()))?;
        let instance = Instance::open_with(path, options).map_err(|e| {
            let message = e.to_string();
            if duckdb_adapter::classify_message(&message) == duckdb_adapter::ErrorKind::Locked {
                open_err(format!("it is locked by another process: {message}"))
            } else {
                open_err(message)
            }
        })?;
        Ok(Self::from_instance(instance))
    }

    /// Opens a new, private in-memory database (for tests and experiments).
    ///
    /// # Errors
    /// [`Error::Open`] if DuckDB cannot start.
    pub fn open_in_memory() -> Result<Self> {
        let instance = Instance::open_in_memory().map_err(|e| Error::Open {
            path: PathBuf::from(":memory:"),
            reason: e.to_string(),
        })?;
        Ok(Self::from_instance(instance))
    }

    /// Opens the database configured by the environment (`DB_PATH`, see
    /// [`Config`]).
    ///
    /// # Errors
    /// As [`Database::open`].
    pub fn from_env() -> Result<Self> {
        let config = Config::from_env();
        Self::open_with(&config.db_path, &config.duckdb)
    }

    fn from_instance(instance: Instance) -> Self {
        Self {
            inner: Arc::new(Inner {
                instance,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The DuckDB instance behind this handle.
    #[must_use]
    pub fn instance(&self) -> &Instance {
        &self.inner.instance
    }

    /// Applies all pending migrations. Idempotent: on an up-to-date database
    /// it changes nothing, and concurrent calls take turns.
    ///
    /// # Errors
    /// [`Error::Migration`] with the failing statement's error.
    pub async fn init(&self) -> Result<()> {
        self.migrate(MigrateCommand::Up { num: None })
            .await
            .map(|_| ())
    }

    /// Runs a migration verb and returns the state of every migration after
    /// it.
    ///
    /// # Errors
    /// [`Error::Migration`] with the failing statement's error.
    pub async fn migrate(&self, command: MigrateCommand) -> Result<Vec<MigrationState>> {
        migration::commands::run_on_duckdb(&self.inner.instance, command)
            .await
            .map_err(Error::Migration)
    }

    /// Starts a unit of work on a dedicated connection. Prefer
    /// [`Database::transaction`], which cannot forget to commit; a `Session`
    /// from `begin` rolls back when dropped unless [`Session::commit`] ran.
    ///
    /// # Errors
    /// [`Error::Database`] if no connection can be opened or `BEGIN` fails.
    pub async fn begin(&self) -> Result<Session> {
        let conn = self.inner.instance.connect()?;
        conn.begin().await?;
        Ok(Session { conn, open: true })
    }

    /// Runs `work` as one unit of work: everything it does through the
    /// [`Session`] is committed if it returns `Ok`, and rolled back if it
    /// returns `Err`, panics, or its future is dropped before completing.
    ///
    /// If a statement failed inside `work` (even one whose error `work`
    /// ignored), the unit of work is rolled back and [`Error::Aborted`] is
    /// returned instead of committing: DuckDB would turn that COMMIT into a
    /// silent rollback. A failed COMMIT is returned as an error too.
    ///
    /// # Errors
    /// The error of `work`, or of `BEGIN`/`COMMIT`, converted into `E`.
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&Session) -> Result<T, E>,
        E: From<Error>,
    {
        let session = self.begin().await?;
        match work(&session).await {
            Ok(value) => {
                let started = std::time::Instant::now();
                session.commit().await?;
                tracing::debug!(
                    commit_ms = started.elapsed().as_millis(),
                    "unit of work committed"
                );
                Ok(value)
            }
            Err(e) => {
                // The work's error is what the caller needs; a failed
                // rollback is logged (the connection is closed right after,
                // which rolls back too).
                if let Err(rollback) = session.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failed unit of work failed");
                }
                Err(e)
            }
        }
    }

    /// As [`Database::transaction`], but taking turns with every other
    /// `write_transaction` on the same database in this process, for the
    /// whole unit of work. DuckDB's concurrency control is optimistic (of two
    /// transactions writing the same rows, the later fails with
    /// [`Error::Conflict`]); writers that take turns never conflict, so
    /// concurrent ingests through one handle never lose work. Ingesting
    /// uses this.
    ///
    /// # Errors
    /// As [`Database::transaction`].
    pub async fn write_transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&Session) -> Result<T, E>,
        E: From<Error>,
    {
        let _turn = self.inner.instance.write_lock().lock().await;
        self.transaction(work).await
    }

    fn checkout(&self) -> Result<DuckDbConnection, DbErr> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self
                .inner
                .instance
                .connect()
                .map_err(duckdb_adapter::AdapterError::into_exec_err),
        }
    }

    fn checkin(&self, conn: DuckDbConnection) {
        if conn.in_transaction() {
            return; // never reuse a connection left inside a transaction
        }
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }
}

/// Statements run on the handle itself are each their own transaction
/// (autocommit), on a pooled connection.
#[async_trait::async_trait]
impl ConnectionTrait for Database {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let conn = self.checkout()?;
        let result = conn.execute_raw(stmt).await;
        self.checkin(conn);
        result
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let conn = self.checkout()?;
        let result = conn.execute_unprepared(sql).await;
        self.checkin(conn);
        result
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let conn = self.checkout()?;
        let result = conn.query_one_raw(stmt).await;
        self.checkin(conn);
        result
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let conn = self.checkout()?;
        let result = conn.query_all_raw(stmt).await;
        self.checkin(conn);
        result
    }
}

/// A unit of work: one transaction on one dedicated connection.
///
/// Use it wherever Sea-ORM takes a connection (`&session`). Dropping a
/// session that was not committed rolls it back.
#[derive(Debug)]
pub struct Session {
    conn: DuckDbConnection,
    /// Whether the transaction is still open (not committed or rolled back).
    open: bool,
}

impl Session {
    /// Commits the unit of work.
    ///
    /// # Errors
    /// [`Error::Aborted`] (after rolling back) if a statement of this unit
    /// of work failed; the database's error if COMMIT fails.
    pub async fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.commit().await.map_err(Error::from)
    }

    /// Rolls the unit of work back.
    ///
    /// # Errors
    /// The database's error if ROLLBACK fails.
    pub async fn rollback(mut self) -> Result<()> {
        self.open = false;
        self.conn.rollback().await.map_err(Error::from)
    }

    /// The DuckDB connection of this unit of work, for bulk work Sea-ORM
    /// cannot express (DuckDB's Appender), inside the same transaction.
    #[must_use]
    pub fn duckdb(&self) -> &DuckDbConnection {
        &self.conn
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.open {
            self.conn.rollback_now();
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Session {
    fn get_database_backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.conn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.conn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.conn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.conn.query_all_raw(stmt).await
    }
}
