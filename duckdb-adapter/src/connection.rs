//! One DuckDB connection, usable as a Sea-ORM [`ConnectionTrait`].
//!
//! A [`DuckDbConnection`] owns one `duckdb::Connection` (one DuckDB client
//! context, so one transaction at a time). Statements run on Tokio's blocking
//! pool so a long DuckDB call never stalls the async runtime, one at a time
//! per connection. Transactions are explicit statements on this connection
//! (`BEGIN`/`COMMIT`/`ROLLBACK`), so their errors reach the caller, and the
//! connection remembers whether a statement of the open transaction failed:
//! DuckDB would turn a later `COMMIT` of such a transaction into a silent
//! rollback, so [`DuckDbConnection::commit`] refuses it with an error.
//!
//! Concurrent units of work each use their own `DuckDbConnection`; statements
//! of one transaction therefore never interleave with another's.
//!
//! A statement or `COMMIT` that fails in a way that leaves DuckDB's in-memory
//! state untrustworthy ([`crate::ErrorKind::EngineFailed`]) marks the
//! connection's instance failed, so that [`crate::Instance`] replaces it
//! before anything else is written.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use duckdb::types::Value as DuckValue;
use sea_orm::sea_query::Value;
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, ProxyExecResult, ProxyRow, QueryResult,
    Statement,
};

use crate::convert::{ColumnKind, from_duckdb, to_duckdb};
use crate::error::{AdapterError, Refusal, Result};
use crate::instance::Health;

/// Prepared statements kept per connection: the repository issues a few
/// dozen distinct statements, each many times.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Transaction state of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TxnState {
    /// Autocommit: each statement is its own transaction.
    Idle,
    /// Inside `BEGIN`; `failed` says why it must not be committed, once
    /// it must not.
    Active { failed: Refusal },
}

#[derive(Debug)]
struct State {
    conn: duckdb::Connection,
    txn: TxnState,
    /// The health of the instance this connection belongs to.
    health: Arc<Health>,
    /// DuckDB's thread count before [`DuckDbConnection::limit_threads`],
    /// given back when the transaction ends.
    threads_to_restore: Option<i64>,
    /// Transactions begun on this connection so far: the current one's
    /// number while one is open (see [`DuckDbConnection::transaction`]).
    begun: u64,
}

impl State {
    /// Records the outcome of a statement: inside a transaction, the first
    /// failure poisons it; a failure of the engine itself fails the
    /// instance.
    fn note<T>(&mut self, result: &Result<T>) {
        let Err(e) = result else { return };
        if e.is_engine_failure() {
            self.health.fail(&e.to_string());
        }
        if let TxnState::Active { failed } = &mut self.txn {
            failed.statement_failed(e);
        }
    }

    /// Gives the instance back the thread count that
    /// [`DuckDbConnection::limit_threads`] replaced (if it did).
    fn restore_threads(&mut self) -> Result<()> {
        match self.threads_to_restore.take() {
            Some(threads) => {
                self.conn.execute("SET threads = ?", [threads])?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn refuse_if_aborted(&self) -> Result<()> {
        match &self.txn {
            TxnState::Active { failed } => failed.check(),
            TxnState::Idle => Ok(()),
        }
    }
}

/// One transaction of one [`DuckDbConnection`] (see
/// [`DuckDbConnection::with_raw_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transaction(u64);

/// A dedicated DuckDB connection speaking Sea-ORM's [`ConnectionTrait`].
///
/// Cloning shares the same underlying connection (and its transaction).
#[derive(Debug, Clone)]
pub struct DuckDbConnection {
    state: Arc<Mutex<State>>,
}

impl DuckDbConnection {
    /// Wraps a `duckdb::Connection` of the instance whose health is
    /// `health` (see [`crate::Instance::connect`]).
    pub(crate) fn new(conn: duckdb::Connection, health: Arc<Health>) -> Self {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        Self {
            state: Arc::new(Mutex::new(State {
                conn,
                txn: TxnState::Idle,
                health,
                threads_to_restore: None,
                begun: 0,
            })),
        }
    }

    /// Whether this connection belongs to the instance whose health is
    /// `health`.
    pub(crate) fn belongs_to(&self, health: &Arc<Health>) -> bool {
        Arc::ptr_eq(&Self::lock(&self.state).health, health)
    }

    fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the connection itself
        // inconsistent (DuckDB calls are atomic); the transaction is marked
        // failed below so it cannot be committed.
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection on Tokio's blocking pool. A failure inside
    /// an open transaction marks the transaction failed.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> Result<T> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = Self::lock(&state);
            let result = f(&mut guard);
            guard.note(&result);
            result
        })
        .await;
        joined.unwrap_or_else(|e| {
            // The work panicked (or the runtime is shutting down): whatever
            // it did to the open transaction is unknown, so poison it.
            let failed: Result<T> = Err(AdapterError::Worker(e.to_string()));
            Self::lock(&self.state).note(&failed);
            failed
        })
    }

    /// Runs a statement that returns rows (SELECT, or INSERT/UPDATE/DELETE
    /// with RETURNING) and decodes every row.
    ///
    /// # Errors
    /// DuckDB's error, a value that cannot be bound or decoded, or
    /// [`AdapterError::TransactionAborted`] inside a failed transaction.
    pub async fn query(&self, stmt: Statement) -> Result<Vec<ProxyRow>> {
        self.run(move |state| {
            state.refuse_if_aborted()?;
            query_rows(&state.conn, &stmt)
        })
        .await
    }

    /// Runs a statement that returns no rows; returns the affected row count.
    /// A statement without bound values (DDL, `execute_unprepared`) may hold
    /// several `;`-separated statements and reports 0 rows.
    ///
    /// # Errors
    /// As [`DuckDbConnection::query`].
    pub async fn execute(&self, stmt: Statement) -> Result<u64> {
        self.run(move |state| {
            state.refuse_if_aborted()?;
            execute_statement(&state.conn, &stmt)
        })
        .await
    }

    /// Runs arbitrary work on the raw `duckdb::Connection` (for example a
    /// DuckDB `Appender`) inside this connection's current transaction. An
    /// error marks the transaction failed like any statement's.
    ///
    /// # Errors
    /// Whatever `f` returns, or [`AdapterError::TransactionAborted`].
    pub async fn with_raw<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&duckdb::Connection) -> Result<T> + Send + 'static,
    {
        self.run(move |state| {
            state.refuse_if_aborted()?;
            f(&state.conn)
        })
        .await
    }

    /// Limits DuckDB to `threads` threads until
    /// [`DuckDbConnection::restore_threads`] or the end of the open
    /// transaction (commit or rollback), whichever comes first.
    ///
    /// For bulk appends: DuckDB runs each Appender flush as a query of one
    /// task, and with a worker thread to run it the connection's own thread
    /// waits by polling (measured: 4 s of CPU, a quarter of the total, in a
    /// million-event ingest on 2 cores). The thread count is the
    /// instance's: other connections of this process's instance run with
    /// the limit too while it lasts.
    ///
    /// # Errors
    /// [`AdapterError::TransactionState`] without an open transaction, or
    /// DuckDB's error.
    pub async fn limit_threads(&self, threads: i64) -> Result<()> {
        self.run(move |state| {
            if state.txn == TxnState::Idle {
                return Err(AdapterError::TransactionState(
                    "limit_threads needs an open transaction (the limit ends with it)",
                ));
            }
            if state.threads_to_restore.is_none() {
                let before: i64 = state.conn.query_row(
                    "SELECT current_setting('threads')::BIGINT",
                    [],
                    |row| row.get(0),
                )?;
                state.threads_to_restore = Some(before);
            }
            state.conn.execute("SET threads = ?", [threads])?;
            Ok(())
        })
        .await
    }

    /// Gives DuckDB back the thread count that
    /// [`DuckDbConnection::limit_threads`] replaced; a no-op without a
    /// limit.
    ///
    /// # Errors
    /// DuckDB's error.
    pub async fn restore_threads(&self) -> Result<()> {
        self.run(State::restore_threads).await
    }

    /// The open transaction, to be named to
    /// [`DuckDbConnection::with_raw_in`]; `None` without one.
    pub async fn transaction(&self) -> Result<Option<Transaction>> {
        self.run(|state| Ok((state.txn != TxnState::Idle).then_some(Transaction(state.begun))))
            .await
    }

    /// As [`DuckDbConnection::with_raw`], for work that belongs to
    /// `transaction` and must run in it or not at all: work started as a
    /// task of its own may get the connection only after that transaction
    /// ended (rolled back because the caller stopped, say), or when another
    /// one is open. It is then refused and does nothing.
    ///
    /// # Errors
    /// [`AdapterError::TransactionState`] when `transaction` is no longer
    /// the open transaction, [`AdapterError::TransactionAborted`] when it
    /// failed, or whatever `f` returns.
    pub async fn with_raw_in<T, F>(&self, transaction: Transaction, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&duckdb::Connection) -> Result<T> + Send + 'static,
    {
        self.run(move |state| {
            if state.txn == TxnState::Idle || state.begun != transaction.0 {
                return Err(AdapterError::TransactionState(
                    "the transaction this work belonged to has ended",
                ));
            }
            state.refuse_if_aborted()?;
            f(&state.conn)
        })
        .await
    }

    /// Starts a transaction on this connection.
    ///
    /// # Errors
    /// [`AdapterError::TransactionState`] if one is already open (DuckDB has
    /// no nested transactions or savepoints), or DuckDB's error.
    pub async fn begin(&self) -> Result<()> {
        self.run(|state| {
            if state.txn != TxnState::Idle {
                return Err(AdapterError::TransactionState(
                    "a transaction is already open on this connection (DuckDB has no nested transactions)",
                ));
            }
            state.conn.execute_batch("BEGIN TRANSACTION")?;
            state.txn = TxnState::Active {
                failed: Refusal::default(),
            };
            state.begun += 1;
            Ok(())
        })
        .await
    }

    /// Commits the open transaction.
    ///
    /// # Errors
    /// [`AdapterError::TransactionAborted`] (after rolling back) when a
    /// statement of the transaction failed, DuckDB's error when `COMMIT`
    /// itself fails (the transaction is then rolled back), or
    /// [`AdapterError::TransactionState`] without an open transaction.
    pub async fn commit(&self) -> Result<()> {
        let state = Arc::clone(&self.state);
        let joined = tokio::task::spawn_blocking(move || {
            let mut state = Self::lock(&state);
            commit_locked(&mut state)
        })
        .await;
        joined.map_err(|e| AdapterError::Worker(e.to_string()))?
    }

    /// Rolls back the open transaction; a no-op without one.
    ///
    /// # Errors
    /// DuckDB's error from `ROLLBACK`.
    pub async fn rollback(&self) -> Result<()> {
        let state = Arc::clone(&self.state);
        let joined =
            tokio::task::spawn_blocking(move || rollback_locked(&mut Self::lock(&state))).await;
        joined.map_err(|e| AdapterError::Worker(e.to_string()))?
    }

    /// Rolls back the open transaction from synchronous code (a `Drop`).
    ///
    /// If a statement of this connection is still running on the blocking
    /// pool, this does not wait for it: the transaction is never committed,
    /// and DuckDB rolls it back when that statement's task lets go of the
    /// connection and it is closed.
    pub fn rollback_now(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            if let Err(e) = rollback_locked(&mut state) {
                tracing::warn!(error = %e, "rollback of an abandoned transaction failed");
            }
        } else {
            tracing::debug!("connection busy; its transaction rolls back when it closes");
        }
    }

    /// Marks the open transaction failed, so that its commit is refused
    /// (and it is rolled back) with `reason`. For callers that detect,
    /// outside any statement, that committing would store something
    /// inconsistent. A no-op without an open transaction.
    pub fn poison(&self, reason: &str) {
        if let TxnState::Active { failed } = &mut Self::lock(&self.state).txn {
            failed.poison(reason);
        }
    }

    /// Whether a transaction is open on this connection.
    #[must_use]
    pub fn in_transaction(&self) -> bool {
        Self::lock(&self.state).txn != TxnState::Idle
    }
}

/// What DuckDB says when a COMMIT succeeded but the automatic checkpoint
/// after it failed (and invalidated the instance).
const DURABLE_COMMIT: &str = "COMMIT succeeded and is durable";

/// Ends the transaction with COMMIT (see [`DuckDbConnection::commit`]),
/// then gives back a thread limit.
fn commit_locked(state: &mut State) -> Result<()> {
    let committed = commit_inner(state);
    give_back_threads(state);
    committed
}

/// Ends the transaction with ROLLBACK (a no-op without one), then gives
/// back a thread limit.
fn rollback_locked(state: &mut State) -> Result<()> {
    let rolled_back = rollback_inner(state);
    give_back_threads(state);
    rolled_back
}

/// The end of a transaction ends its thread limit. A failure changes
/// nothing the transaction stored (a failed instance refuses every
/// statement; the next connection opens a new one), so it is logged.
fn give_back_threads(state: &mut State) {
    if let Err(e) = state.restore_threads() {
        tracing::debug!(error = %e, "DuckDB's thread count could not be given back");
    }
}

fn commit_inner(state: &mut State) -> Result<()> {
    let TxnState::Active { failed } = std::mem::replace(&mut state.txn, TxnState::Idle) else {
        return Err(AdapterError::TransactionState(
            "COMMIT without an open transaction",
        ));
    };
    if let Err(refused) = failed.check() {
        // DuckDB would answer COMMIT with success and roll back: refuse.
        if let Err(e) = state.conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rollback of an aborted transaction failed");
        }
        return Err(refused);
    }
    match state.conn.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains(DURABLE_COMMIT) => {
            // DuckDB committed (the WAL holds the transaction) and then
            // failed its automatic checkpoint, which invalidated the
            // instance: the commit stands, the instance is replaced.
            state.health.fail(&e.to_string());
            Ok(())
        }
        Err(e) => {
            // A failed COMMIT leaves nothing committed, but the instance
            // was seen to store the failed transaction's rows in the next
            // one's place: it must not be used again.
            let _ = state.conn.execute_batch("ROLLBACK");
            let e = AdapterError::CommitFailed(e);
            state.health.fail(&e.to_string());
            Err(e)
        }
    }
}

fn rollback_inner(state: &mut State) -> Result<()> {
    match std::mem::replace(&mut state.txn, TxnState::Idle) {
        TxnState::Idle => Ok(()),
        TxnState::Active { .. } => Ok(state.conn.execute_batch("ROLLBACK")?),
    }
}

fn bind_values(stmt: &Statement) -> Result<Vec<DuckValue>> {
    stmt.values
        .as_ref()
        .map(|values| values.0.iter().map(to_duckdb).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

fn query_rows(conn: &duckdb::Connection, stmt: &Statement) -> Result<Vec<ProxyRow>> {
    let params = bind_values(stmt)?;
    let mut prepared = conn.prepare_cached(&stmt.sql)?;
    let mut rows = prepared.query(duckdb::params_from_iter(params.iter()))?;
    let columns: Vec<(String, ColumnKind)> = match rows.as_ref() {
        Some(executed) => (0..executed.column_count())
            .map(|i| {
                let name = executed
                    .column_name(i)
                    .map(ToOwned::to_owned)
                    .unwrap_or_default();
                let logical = executed.column_logical_type(i);
                let kind = ColumnKind::from_logical(logical.id(), logical.get_alias().as_deref());
                (name, kind)
            })
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        for (i, (name, kind)) in columns.iter().enumerate() {
            let value = from_duckdb(name, *kind, row.get_ref(i)?)?;
            values.insert(name.clone(), value);
        }
        out.push(ProxyRow::new(values));
    }
    Ok(out)
}

fn execute_statement(conn: &duckdb::Connection, stmt: &Statement) -> Result<u64> {
    if stmt.values.is_none() {
        conn.execute_batch(&stmt.sql)?;
        return Ok(0);
    }
    let params = bind_values(stmt)?;
    let mut prepared = conn.prepare_cached(&stmt.sql)?;
    let changed = prepared.execute(duckdb::params_from_iter(params.iter()))?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

#[async_trait::async_trait]
impl ConnectionTrait for DuckDbConnection {
    fn get_database_backend(&self) -> DbBackend {
        // DuckDB speaks PostgreSQL's dialect for everything sea-query builds
        // here: `$n` placeholders, double-quoted identifiers, RETURNING,
        // ON CONFLICT ... "excluded", GREATEST/LEAST.
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let rows_affected = self
            .execute(stmt)
            .await
            .map_err(AdapterError::into_exec_err)?;
        Ok(ProxyExecResult::new(0, rows_affected).into())
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.execute_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let rows = self
            .query(stmt)
            .await
            .map_err(AdapterError::into_query_err)?;
        Ok(rows.into_iter().next().map(QueryResult::from))
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let rows = self
            .query(stmt)
            .await
            .map_err(AdapterError::into_query_err)?;
        Ok(rows.into_iter().map(QueryResult::from).collect())
    }
}
