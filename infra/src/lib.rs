//! The infrastructure of exposure-store, below the main crate and the
//! migration crate so that both binaries (`exposure-store` and
//! `cargo run -p migration`) share it:
//!
//! - which database ([`Config`], from the environment; [`Engine`]; the
//!   default DuckDB file [`DEFAULT_DB_PATH`]);
//! - how a PostgreSQL server is reached ([`connect_postgres`]);
//! - what both command lines set up and share: logging ([`init_logging`]),
//!   the database flags ([`DatabaseArgs`]) and the exit status of a command
//!   that cannot do its work ([`EXIT_ERROR`]).

mod cli;
mod config;
mod postgres;

pub use cli::{DatabaseArgs, EXIT_ERROR, init_logging};
pub use config::{Config, DEFAULT_DB_PATH, Engine, duckdb_options, redact_url};
pub use postgres::connect_postgres;
