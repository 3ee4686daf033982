//! Integration tests: one binary, each test on its own DuckDB file in a
//! temporary directory, created through the real migrations.

mod cli;
mod fuzz;
mod helpers;
mod migrations;
mod properties;
mod reliability;
mod repository;
mod roundtrip;
mod sessions;
