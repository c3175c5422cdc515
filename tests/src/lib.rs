//! Harness for limpet's end-to-end tests: starts the real `limpet` binary on ephemeral
//! loopback ports with a generated config, real demo backends, and offers a small HTTP
//! client that handles the affinity cookie explicitly, so tests can assert on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod certs;
mod client;
mod measure;
mod process;
mod raw;
mod redis;
mod spec;

pub use certs::{dated, self_signed, Key};
pub use client::*;
pub use limpet_demo::Backend;
pub use measure::*;
pub use process::*;
pub use raw::*;
pub use redis::*;
pub use spec::*;

/// The signing secret tests hand to limpet through `LIMPET_TEST_KEY`.
pub const TEST_SECRET: &str = "e2e-secret-0123456789abcdef0123456789";
