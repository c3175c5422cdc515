//! The only crate that knows Pingora: the immutable [`Snapshot`] built from a validated
//! config, the `ProxyHttp` adapter that runs the pure persistence and balancing logic per
//! request, the admin endpoints, and the background service that owns SIGHUP.

mod access;
mod admin;
mod attempt;
pub mod clock;
mod control;
mod deadline;
mod decide;
mod exchange;
mod finish;
mod front;
mod h1;
mod health;
mod keys;
mod live;
mod load;
mod local;
mod persist;
mod pool;
mod proxy;
mod proxy_protocol;
mod render;
mod request;
mod shared;
mod snapshot;
mod tls;
mod upstream;

pub use access::AccessLog;
pub use admin::Admin;
pub use control::{on_log_level, when_listening, Drain, Reloader, Signals, Stopped, StoreKeeper};
pub use front::Front;
pub use h1::H1;
pub use health::HealthService;
pub use load::{load_file, Loaded};
pub use proxy::Limpet;
pub use proxy_protocol::{read_header as read_proxy_header, BeforeTls, Rejected as ProxyHeaderRejected};
pub use shared::Shared;
pub use snapshot::Snapshot;
pub use tls::SniResolver;

#[cfg(test)]
mod tests;
