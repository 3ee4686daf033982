//! A Sea-ORM [`DatabaseConnection`] on one DuckDB connection, for code that
//! needs that concrete type (sea-orm-migration accepts nothing else).
//!
//! Sea-ORM's proxy interface cannot report a failed `BEGIN`/`COMMIT`
//! (`ProxyDatabaseTrait::commit` returns `()`). This proxy keeps such an
//! error and returns it from the next statement, and [`ProxyGuard::finish`]
//! returns it when the work is done, so it is never lost. Each proxy has its
//! own dedicated connection, so Sea-ORM's transactions on it have affinity;
//! it must not be shared by concurrent tasks (use one per task).

use std::sync::{Arc, Mutex, PoisonError};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ProxyDatabaseTrait, ProxyExecResult,
    ProxyRow, Statement,
};

use crate::connection::DuckDbConnection;
use crate::error::AdapterError;

#[derive(Debug, Default)]
struct Deferred(Mutex<Option<String>>);

impl Deferred {
    fn set(&self, e: &AdapterError) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e.to_string());
        }
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[derive(Debug)]
struct DuckDbProxy {
    conn: DuckDbConnection,
    deferred: Arc<Deferred>,
}

#[async_trait::async_trait]
impl ProxyDatabaseTrait for DuckDbProxy {
    async fn query(&self, statement: Statement) -> Result<Vec<ProxyRow>, DbErr> {
        if let Some(e) = self.deferred.take() {
            return Err(DbErr::Query(sea_orm::RuntimeErr::Internal(e)));
        }
        self.conn
            .query(statement)
            .await
            .map_err(AdapterError::into_query_err)
    }

    async fn execute(&self, statement: Statement) -> Result<ProxyExecResult, DbErr> {
        if let Some(e) = self.deferred.take() {
            return Err(DbErr::Exec(sea_orm::RuntimeErr::Internal(e)));
        }
        let rows = self
            .conn
            .execute(statement)
            .await
            .map_err(AdapterError::into_exec_err)?;
        Ok(ProxyExecResult::new(0, rows))
    }

    async fn begin(&self) {
        if let Err(e) = self.conn.begin().await {
            self.deferred.set(&e);
        }
    }

    async fn commit(&self) {
        if let Err(e) = self.conn.commit().await {
            self.deferred.set(&e);
        }
    }

    async fn rollback(&self) {
        if let Err(e) = self.conn.rollback().await {
            self.deferred.set(&e);
        }
    }

    fn start_rollback(&self) {
        self.conn.rollback_now();
    }

    async fn ping(&self) -> Result<(), DbErr> {
        self.conn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
            .await
            .map(|_| ())
    }
}

/// Reports what the proxy could not report itself: keep it next to the
/// [`DatabaseConnection`] and call [`ProxyGuard::finish`] when done.
#[derive(Debug, Clone)]
pub struct ProxyGuard {
    deferred: Arc<Deferred>,
}

impl ProxyGuard {
    /// Returns `result`, unless a `BEGIN`/`COMMIT`/`ROLLBACK` failed on the
    /// way, in which case that failure is the error.
    ///
    /// # Errors
    /// The first error of `result` or of a transaction statement.
    pub fn finish<T>(&self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        let value = result?;
        match self.deferred.take() {
            Some(e) => Err(DbErr::Exec(sea_orm::RuntimeErr::Internal(e))),
            None => Ok(value),
        }
    }
}

/// Wraps a dedicated connection as a Sea-ORM [`DatabaseConnection`] (backend
/// `Postgres`, DuckDB's dialect for everything sea-query builds here).
///
/// # Errors
/// Sea-ORM's error if the proxy cannot be set up.
pub async fn database_connection(
    conn: DuckDbConnection,
) -> Result<(DatabaseConnection, ProxyGuard), DbErr> {
    let deferred = Arc::new(Deferred::default());
    let proxy = DuckDbProxy {
        conn,
        deferred: Arc::clone(&deferred),
    };
    let db =
        sea_orm::Database::connect_proxy(DbBackend::Postgres, Arc::new(Box::new(proxy))).await?;
    Ok((db, ProxyGuard { deferred }))
}
