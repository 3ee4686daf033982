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
//! Two engines sit behind the same handle, chosen by configuration
//! ([`Config`]): an embedded DuckDB file (the default), or a PostgreSQL
//! server (`DATABASE_URL=postgres://...`) through Sea-ORM's native driver.
//! Every unit of work runs on its own connection (a DuckDB connection, or
//! one of the PostgreSQL pool), so statements of concurrent units of work
//! never interleave on one transaction, and both `Database` and `Session`
//! implement Sea-ORM's [`ConnectionTrait`]: entity queries
//! (`Entity::find()...all(&db)`), `ActiveModel::insert`, `insert_many`,
//! pagination and `count` work on either, on both engines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use duckdb_adapter::{DuckDbConnection, Instance, InstanceOptions, Refusal};
use infra::{Config, Engine, redact_url};
use migration::MigratorTrait;
use migration::commands::{MigrateCommand, MigrationState};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};

use crate::error::{Error, Result, Retryable, inner_message};

/// PostgreSQL connections pooled per handle (each unit of work holds one
/// until it ends).
const POSTGRES_POOL_SIZE: u32 = 16;

/// How many times [`retry_conflicts`] runs a unit of work at most.
pub const MAX_ATTEMPTS: u32 = 8;

/// Runs `attempt` (a whole unit of work) until it succeeds, fails with an
/// error that is not retryable, or has run [`MAX_ATTEMPTS`] times, waiting a
/// little longer (with jitter) before each new attempt. For PostgreSQL,
/// where concurrent writers of the same keys or events can deadlock and
/// PostgreSQL then fails one of them.
///
/// # Errors
/// The last attempt's error.
pub async fn retry_conflicts<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && attempts < MAX_ATTEMPTS => {
                let base = 20_u64 << attempts.min(6);
                let wait = std::time::Duration::from_millis(base + fastrand::u64(..base));
                tracing::info!(
                    attempts,
                    wait_ms = wait.as_millis(),
                    "conflict with a concurrent unit of work; retrying"
                );
                tokio::time::sleep(wait).await;
                attempts += 1;
            }
            outcome => return outcome,
        }
    }
}

/// A handle to one exposure-store database. Clones share everything.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    /// Statements run on the handle itself use the instance's idle
    /// autocommit connections.
    DuckDb(Instance),
    Postgres(Postgres),
}

/// A PostgreSQL pool and the URL it came from (kept for the migrations'
/// dedicated connection; never printed with its password).
struct Postgres {
    pool: DatabaseConnection,
    url: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
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
        if options.read_only {
            if !path.exists() {
                return Err(open_err(
                    "no such database file (`exposure-store init` or `ingest` creates one)"
                        .to_owned(),
                ));
            }
        } else {
            duckdb_adapter::ensure_parent_dir(path).map_err(|e| open_err(e.to_string()))?;
        }
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

    /// Opens a new, private in-memory DuckDB database (for tests and
    /// experiments).
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

    /// Connects to the PostgreSQL database at `url`
    /// (`postgres://user:password@host:port/database`) through a pool.
    ///
    /// The schema is not touched: call [`Database::init`] to apply the
    /// migrations.
    ///
    /// # Errors
    /// [`Error::Connect`] when the server cannot be reached or refuses the
    /// login; the error shows the URL without its password.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = infra::connect_postgres(url, POSTGRES_POOL_SIZE)
            .await
            .map_err(|e| Error::Connect {
                url: redact_url(url),
                reason: inner_message(&e),
            })?;
        Ok(Self {
            inner: Arc::new(Inner::Postgres(Postgres {
                pool,
                url: url.to_owned(),
            })),
        })
    }

    /// Opens the database `config` names: PostgreSQL when it has a
    /// `database_url`, otherwise the DuckDB file at `db_path`.
    ///
    /// # Errors
    /// As [`Database::connect`] or [`Database::open_with`].
    pub async fn from_config(config: &Config) -> Result<Self> {
        match &config.database_url {
            Some(url) => Self::connect(url).await,
            None => Self::open_with(&config.db_path, &config.duckdb),
        }
    }

    /// Opens the database configured by the environment (`DATABASE_URL`,
    /// `DB_PATH`, see [`Config`]).
    ///
    /// # Errors
    /// As [`Database::from_config`].
    pub async fn from_env() -> Result<Self> {
        Self::from_config(&Config::from_env()).await
    }

    fn from_instance(instance: Instance) -> Self {
        Self {
            inner: Arc::new(Inner::DuckDb(instance)),
        }
    }

    /// Which engine this handle talks to.
    #[must_use]
    pub fn engine(&self) -> Engine {
        match &*self.inner {
            Inner::DuckDb(_) => Engine::DuckDb,
            Inner::Postgres(_) => Engine::Postgres,
        }
    }

    /// The DuckDB instance behind this handle (`None` on PostgreSQL).
    #[must_use]
    pub fn instance(&self) -> Option<&Instance> {
        match &*self.inner {
            Inner::DuckDb(instance) => Some(instance),
            Inner::Postgres(_) => None,
        }
    }

    /// Applies all pending migrations. Idempotent: on an up-to-date database
    /// it changes nothing, and concurrent calls take turns (also from other
    /// processes, on PostgreSQL).
    ///
    /// # Errors
    /// [`Error::Migration`] with the failing statement's error.
    pub async fn init(&self) -> Result<()> {
        self.migrate(MigrateCommand::Up { num: None })
            .await
            .map(|_| ())
    }

    /// Checks, without writing anything, that the schema is exactly the
    /// one this build's migrations make: what read-only users run instead
    /// of [`Database::init`].
    ///
    /// # Errors
    /// [`Error::SchemaNotCurrent`] naming the pending (or unknown)
    /// migrations; [`Error::Database`] if the check cannot be read.
    pub async fn check_schema(&self) -> Result<()> {
        let status = self
            .transaction(async |s| {
                migration::commands::schema_status(s)
                    .await
                    .map_err(Error::from)
            })
            .await?;
        if status.is_current() {
            return Ok(());
        }
        if !status.unknown.is_empty() {
            return Err(Error::SchemaNotCurrent(format!(
                "it was written by a newer exposure-store (unknown migrations: {})",
                status.unknown.join(", ")
            )));
        }
        let reason = if status.pending.len() == migration::Migrator::migrations().len() {
            "it has no exposure-store schema yet (`exposure-store init` creates it)".to_owned()
        } else {
            format!(
                "{} migration(s) are pending: {} (`exposure-store init`, with write access, \
                 applies them)",
                status.pending.len(),
                status.pending.join(", ")
            )
        };
        Err(Error::SchemaNotCurrent(reason))
    }

    /// Runs a migration verb and returns the state of every migration after
    /// it.
    ///
    /// # Errors
    /// [`Error::Migration`] with the failing statement's error.
    pub async fn migrate(&self, command: MigrateCommand) -> Result<Vec<MigrationState>> {
        let result = match &*self.inner {
            Inner::DuckDb(instance) => migration::commands::run_on_duckdb(instance, command).await,
            Inner::Postgres(pg) => migration::commands::run_on_postgres(&pg.url, command).await,
        };
        let states = result.map_err(Error::Migration)?;
        self.fill_provenance(&states).await?;
        Ok(states)
    }

    /// Once migration 5 (`add_current_provenance`) is applied, rows stored
    /// before it have no provenance: computes them from the audit log
    /// ([`ExposureRepository::rebuild`](crate::ExposureRepository::rebuild)),
    /// in one unit of work. Does nothing (one probe) on any other database.
    async fn fill_provenance(&self, states: &[MigrationState]) -> Result<()> {
        let provenance = states
            .iter()
            .any(|m| m.applied && m.name.ends_with("_add_current_provenance"));
        if !provenance || !crate::repository::lacks_provenance(self).await? {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let report = self
            .write_transaction(async |s| crate::ExposureRepository::default().rebuild(s).await)
            .await?;
        tracing::info!(
            keys = report.changed.len(),
            ms = started.elapsed().as_millis(),
            "provenance of the current state computed from the audit log"
        );
        Ok(())
    }

    /// Starts a unit of work on a dedicated connection. Prefer
    /// [`Database::transaction`], which cannot forget to commit; a `Session`
    /// from `begin` rolls back when dropped unless [`Session::commit`] ran.
    ///
    /// # Errors
    /// [`Error::Database`] if no connection can be had or `BEGIN` fails.
    pub async fn begin(&self) -> Result<Session> {
        self.begin_in(None).await
    }

    /// As [`Database::begin`], for a caller holding the write turn.
    async fn begin_in(&self, in_turn: Option<&WriteTurn>) -> Result<Session> {
        let conn = match &*self.inner {
            Inner::DuckDb(instance) => {
                let conn = instance.connect()?;
                conn.begin().await?;
                SessionConn::DuckDb {
                    conn,
                    open: true,
                    turn: Mutex::new(match in_turn {
                        // A turn of another database does not count.
                        Some(turn) if turn.is_of(instance.write_lock()) => Turn::Caller,
                        _ => Turn::Not(Arc::clone(instance.write_lock())),
                    }),
                }
            }
            Inner::Postgres(pg) => SessionConn::Postgres {
                txn: Some(pg.pool.begin().await?),
                failed: Mutex::default(),
            },
        };
        Ok(Session { conn })
    }

    /// Runs `work` as one unit of work: everything it does through the
    /// [`Session`] is committed if it returns `Ok`, and rolled back if it
    /// returns `Err`, panics, or its future is dropped before completing.
    ///
    /// If a statement failed inside `work` (even one whose error `work`
    /// ignored), the unit of work is rolled back and [`Error::Aborted`] is
    /// returned instead of committing: both DuckDB and PostgreSQL would turn
    /// that COMMIT into a silent rollback. A failed COMMIT is returned as an
    /// error too.
    ///
    /// # Errors
    /// The error of `work`, or of `BEGIN`/`COMMIT`, converted into `E`.
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&Session) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_in(None, work).await
    }

    /// As [`Database::transaction`], for a caller that holds this process's
    /// write turn ([`Database::write_turn`]) and keeps it after the unit of
    /// work, for example to check what the commit stored before the next
    /// writer starts. (A unit of work begun with [`Database::transaction`]
    /// while its caller holds the turn would wait for it forever as soon as
    /// it ingests on DuckDB.)
    ///
    /// # Errors
    /// As [`Database::transaction`].
    pub async fn transaction_in_turn<T, E, F>(&self, turn: &WriteTurn, work: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&Session) -> Result<T, E>,
        E: From<Error>,
    {
        self.transaction_in(Some(turn), work).await
    }

    async fn transaction_in<T, E, F>(&self, turn: Option<&WriteTurn>, work: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&Session) -> Result<T, E>,
        E: From<Error>,
    {
        let session = self.begin_in(turn).await?;
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
                // rollback is logged (the connection is closed or reset
                // right after, which rolls back too).
                if let Err(rollback) = session.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failed unit of work failed");
                }
                Err(e)
            }
        }
    }

    /// As [`Database::transaction`], for units of work that write.
    ///
    /// On DuckDB they take turns with every other `write_transaction` on the
    /// same database in this process, for the whole unit of work: DuckDB's
    /// concurrency control is optimistic (of two transactions writing the
    /// same rows, the later fails with [`Error::Conflict`]), and writers
    /// that take turns never conflict. Ingesting uses this.
    ///
    /// On PostgreSQL they run concurrently, from any number of tasks and
    /// processes: the repository's merge of the current state gives the
    /// same result in any order, and a deadlock between two units of work
    /// fails one of them with [`Error::Conflict`] (`is_retryable`), to be
    /// run again.
    ///
    /// # Errors
    /// As [`Database::transaction`].
    pub async fn write_transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&Session) -> Result<T, E>,
        E: From<Error>,
    {
        match self.write_turn().await {
            Some(turn) => self.transaction_in_turn(&turn, work).await,
            None => self.transaction(work).await,
        }
    }

    /// Waits for this process's turn to write, as [`Database::write_transaction`]
    /// does, and holds it until the guard is dropped: for a writer that
    /// must do more than one unit of work in one turn (ingesting checks
    /// what its commit stored before the next writer starts). `None` on
    /// PostgreSQL, where writers do not take turns.
    pub async fn write_turn(&self) -> Option<WriteTurn> {
        match &*self.inner {
            Inner::DuckDb(instance) => Some(WriteTurn {
                held: Arc::clone(instance.write_lock()).lock_owned().await,
            }),
            Inner::Postgres(_) => None,
        }
    }

    /// Runs `f` on an idle autocommit DuckDB connection.
    async fn on_duckdb<T>(
        &self,
        instance: &Instance,
        f: impl AsyncFnOnce(&DuckDbConnection) -> Result<T, DbErr>,
    ) -> Result<T, DbErr> {
        let conn = instance
            .checkout()
            .map_err(duckdb_adapter::AdapterError::into_exec_err)?;
        let result = f(&conn).await;
        instance.checkin(conn);
        result
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
        match &*self.inner {
            Inner::DuckDb(instance) => {
                self.on_duckdb(instance, async |c| c.execute_raw(stmt).await)
                    .await
            }
            Inner::Postgres(pg) => pg.pool.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match &*self.inner {
            Inner::DuckDb(instance) => {
                self.on_duckdb(instance, async |c| c.execute_unprepared(sql).await)
                    .await
            }
            Inner::Postgres(pg) => pg.pool.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match &*self.inner {
            Inner::DuckDb(instance) => {
                self.on_duckdb(instance, async |c| c.query_one_raw(stmt).await)
                    .await
            }
            Inner::Postgres(pg) => pg.pool.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match &*self.inner {
            Inner::DuckDb(instance) => {
                self.on_duckdb(instance, async |c| c.query_all_raw(stmt).await)
                    .await
            }
            Inner::Postgres(pg) => pg.pool.query_all_raw(stmt).await,
        }
    }
}

/// A unit of work: one transaction on one dedicated connection.
///
/// Use it wherever Sea-ORM takes a connection (`&session`). Dropping a
/// session that was not committed rolls it back.
#[derive(Debug)]
pub struct Session {
    conn: SessionConn,
}

#[derive(Debug)]
enum SessionConn {
    DuckDb {
        conn: DuckDbConnection,
        /// Whether the transaction is still open (not committed or rolled
        /// back).
        open: bool,
        /// This unit of work's part in the process's write turn.
        turn: Mutex<Turn>,
    },
    Postgres {
        /// Taken by commit and rollback; dropping it rolls back.
        txn: Option<DatabaseTransaction>,
        /// Why the transaction must not be committed, once it must not: the
        /// first statement that failed, or a reason given to
        /// [`Session::poison`] (as the DuckDB adapter's connection keeps it).
        failed: Mutex<Refusal>,
    },
}

impl Session {
    /// Commits the unit of work.
    ///
    /// # Errors
    /// [`Error::Aborted`] (after rolling back) if a statement of this unit
    /// of work failed; the database's error if COMMIT fails.
    pub async fn commit(mut self) -> Result<()> {
        match &mut self.conn {
            SessionConn::DuckDb { conn, open, .. } => {
                *open = false;
                conn.commit().await.map_err(Error::from)
            }
            SessionConn::Postgres { txn, failed } => {
                let txn = txn.take().ok_or_else(closed)?;
                let refused = failed
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .check();
                match refused {
                    Err(refused) => {
                        txn.rollback().await?;
                        Err(refused.into())
                    }
                    Ok(()) => Ok(txn.commit().await?),
                }
            }
        }
    }

    /// Rolls the unit of work back.
    ///
    /// # Errors
    /// The database's error if ROLLBACK fails.
    pub async fn rollback(mut self) -> Result<()> {
        match &mut self.conn {
            SessionConn::DuckDb { conn, open, .. } => {
                *open = false;
                conn.rollback().await.map_err(Error::from)
            }
            SessionConn::Postgres { txn, .. } => {
                Ok(txn.take().ok_or_else(closed)?.rollback().await?)
            }
        }
    }

    /// Which engine this unit of work runs on.
    #[must_use]
    pub fn engine(&self) -> Engine {
        match &self.conn {
            SessionConn::DuckDb { .. } => Engine::DuckDb,
            SessionConn::Postgres { .. } => Engine::Postgres,
        }
    }

    /// The DuckDB connection of this unit of work, for bulk work Sea-ORM
    /// cannot express (DuckDB's Appender), inside the same transaction.
    /// `None` on PostgreSQL.
    #[must_use]
    pub fn duckdb(&self) -> Option<&DuckDbConnection> {
        match &self.conn {
            SessionConn::DuckDb { conn, .. } => Some(conn),
            SessionConn::Postgres { .. } => None,
        }
    }

    /// Marks the unit of work failed, so that its commit is refused (and it
    /// is rolled back) with `reason`: for callers that detect, outside any
    /// statement, that committing would store something inconsistent.
    pub fn poison(&self, reason: &str) {
        match &self.conn {
            SessionConn::DuckDb { conn, .. } => conn.poison(reason),
            SessionConn::Postgres { failed, .. } => {
                failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .poison(reason);
            }
        }
    }

    /// On DuckDB, waits for this process's turn to write unless this unit
    /// of work has it already (its caller holds it, or it took it before),
    /// and keeps it until the unit of work ends. The audit log's ids are
    /// unique because each writer looks them up against what is committed
    /// (no index enforces it on DuckDB; see the repository), so writers must
    /// not overlap. A no-op on PostgreSQL, whose primary key enforces it.
    pub(crate) async fn take_write_turn(&self) {
        let SessionConn::DuckDb { turn, .. } = &self.conn else {
            return;
        };
        let lock = match &*turn.lock().unwrap_or_else(PoisonError::into_inner) {
            Turn::Not(lock) => Arc::clone(lock),
            Turn::Caller | Turn::Own { .. } => return,
        };
        let taken = WriteTurn {
            held: lock.lock_owned().await,
        };
        *turn.lock().unwrap_or_else(PoisonError::into_inner) = Turn::Own { _turn: taken };
    }

    /// The connection statements of this unit of work go to.
    fn active(&self) -> Result<Active<'_>, DbErr> {
        match &self.conn {
            SessionConn::DuckDb { conn, .. } => Ok(Active::DuckDb(conn)),
            SessionConn::Postgres { txn, .. } => txn
                .as_ref()
                .map(Active::Postgres)
                .ok_or_else(|| DbErr::Custom(closed().to_string())),
        }
    }

    /// Remembers the first failed statement, so the commit is refused.
    fn note<T>(&self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        if let (Err(e), SessionConn::Postgres { failed, .. }) = (&result, &self.conn) {
            failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .statement_failed(e);
        }
        result
    }
}

/// Holds this process's turn to write to a DuckDB database (see
/// [`Database::write_turn`]) until dropped.
#[derive(Debug)]
pub struct WriteTurn {
    held: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTurn {
    /// Whether this is a turn of the lock `lock`.
    fn is_of(&self, lock: &Arc<tokio::sync::Mutex<()>>) -> bool {
        Arc::ptr_eq(tokio::sync::OwnedMutexGuard::mutex(&self.held), lock)
    }
}

/// A DuckDB unit of work's part in the write turn.
#[derive(Debug)]
enum Turn {
    /// Its caller holds the turn for it.
    Caller,
    /// It took the turn itself, until it ends.
    Own { _turn: WriteTurn },
    /// It has not written yet: the lock to take before it does.
    Not(Arc<tokio::sync::Mutex<()>>),
}

/// A session's connection, borrowed for one statement.
enum Active<'a> {
    DuckDb(&'a DuckDbConnection),
    Postgres(&'a DatabaseTransaction),
}

/// The error for using a session after its transaction ended (only
/// reachable through a bug: commit and rollback consume the session).
fn closed() -> Error {
    Error::Internal("the unit of work has already ended".to_owned())
}

impl Drop for Session {
    fn drop(&mut self) {
        // PostgreSQL: dropping the `DatabaseTransaction` rolls it back.
        if let SessionConn::DuckDb {
            conn, open: true, ..
        } = &self.conn
        {
            conn.rollback_now();
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Session {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self.active()? {
            Active::DuckDb(conn) => conn.execute_raw(stmt).await,
            Active::Postgres(txn) => self.note(txn.execute_raw(stmt).await),
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self.active()? {
            Active::DuckDb(conn) => conn.execute_unprepared(sql).await,
            Active::Postgres(txn) => self.note(txn.execute_unprepared(sql).await),
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self.active()? {
            Active::DuckDb(conn) => conn.query_one_raw(stmt).await,
            Active::Postgres(txn) => self.note(txn.query_one_raw(stmt).await),
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self.active()? {
            Active::DuckDb(conn) => conn.query_all_raw(stmt).await,
            Active::Postgres(txn) => self.note(txn.query_all_raw(stmt).await),
        }
    }
}
