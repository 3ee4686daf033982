//! Integration tests: one binary; each test on its own DuckDB file in a
//! temporary directory, or its own database on the PostgreSQL server that
//! `scripts/with-postgres` starts, created through the real migrations.
//! Most tests run once per engine (`backend_1_Backend__DuckDb`,
//! `backend_2_Backend__Postgres`).

// All of this crate is test code: clippy.toml allows unwrap/expect in
// `#[test]` functions, and the helpers they share are held to the same rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod containment;
mod cross_backend;
mod fuzz;
mod helpers;
mod migrations;
mod properties;
mod reliability;
mod repository;
mod roundtrip;
mod sessions;
mod state;
