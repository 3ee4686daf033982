//! Connecting to a PostgreSQL server.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, RuntimeErr};

/// How long connecting to a PostgreSQL server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects a pool of at most `max_connections` to the PostgreSQL server at
/// `url`.
///
/// One connection is made first on its own, so that a server that is down
/// or refuses the login is reported at once with the driver's reason (a
/// pool would retry a refused connection for half a minute before giving
/// up with a timeout).
///
/// # Errors
/// [`DbErr::Conn`] when the server cannot be reached within 10 s or
/// refuses the connection.
pub async fn connect_postgres(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    use sea_orm::sqlx::{self, Connection};
    let conn_err = |reason: String| DbErr::Conn(RuntimeErr::Internal(reason));
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| conn_err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| conn_err(e.to_string()))?;
    probe.close().await.map_err(|e| conn_err(e.to_string()))?;
    let mut options = ConnectOptions::new(url);
    options.max_connections(max_connections).sqlx_logging(false);
    Database::connect(options).await
}
