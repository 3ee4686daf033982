//! Sea-ORM on DuckDB.
//!
//! Sea-ORM has no DuckDB backend. This crate provides one through the pieces
//! Sea-ORM exposes, with DuckDB's traps handled in one place:
//!
//! - [`Instance`]: a database file opened once per process (two instances of
//!   one file silently lose data), handing out connections; an instance that
//!   failed (a failed `COMMIT`, data corruption, an internal or fatal error)
//!   is closed and the file reopened from disk before its next use, a
//!   write-ahead log left by a crash is replayed and checkpointed at open,
//!   and extensions are never installed or loaded at run time;
//! - [`DuckDbConnection`]: one dedicated connection implementing Sea-ORM's
//!   [`sea_orm::ConnectionTrait`], so `Entity::find()...all(&conn)`,
//!   `ActiveModel::insert`, `insert_many`, pagination and `count` work; with
//!   explicit transactions whose failed `COMMIT` is an error and whose
//!   commit is refused after a failed statement (DuckDB would silently roll
//!   back);
//! - [`database_connection`]: the same connection as a Sea-ORM
//!   `DatabaseConnection` (proxy), for sea-orm-migration;
//! - strict value mapping ([`to_duckdb`] and the decoder behind
//!   [`DuckDbConnection::query`]): `TIMESTAMPTZ` <-> `DateTimeUtc`, `JSON`
//!   <-> `Json`, `HUGEINT` -> `BigInt` with a range check;
//! - [`error_kind`]: constraint violations, write-write conflicts, file
//!   locks and failures of the engine itself told apart without matching
//!   strings elsewhere.
//!
//! Statements are rendered with sea-query's PostgreSQL builder, which DuckDB
//! accepts for everything this project builds, and values are always bound,
//! never inlined.

mod connection;
mod convert;
mod error;
mod instance;
mod proxy;

pub use connection::{DuckDbConnection, Transaction};
pub use convert::{into_duckdb, to_duckdb};
pub use duckdb;
pub use error::{AdapterError, ErrorKind, Refusal, Result, classify_message, error_kind};
pub use instance::{Instance, InstanceOptions, ensure_parent_dir};
pub use proxy::{ProxyGuard, database_connection};
