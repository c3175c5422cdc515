//! End-to-end tests: the real `limpet` binary, real backends on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod app_cookie;
mod bad_input;
mod browser;
mod cli;
mod cookie;
mod deploy;
mod draining;
mod edge;
mod engine;
mod failover;
mod health;
mod http2;
mod logs;
mod proxy_protocol;
mod redis;
mod reload;
mod resources;
mod responses;
mod slow;
mod smuggling;
mod streaming;
mod tables;
mod tls;
mod upstream;
