//! The process's control jobs, one module each: `reload` (SIGHUP → new snapshot),
//! `stop` (which signals stop limpet, and the drain that hands control back to `main`),
//! `keeper` (the session store's upkeep and rebalancing loads), `notify` (readiness
//! for service managers).

mod keeper;
mod notify;
mod reload;
mod stop;

pub use keeper::StoreKeeper;
pub use notify::when_listening;
pub use reload::{on_log_level, Reloader};
pub use stop::{Drain, Signals, Stopped};
