//! Backend health: active checks (run by [`HealthService`]), passive checks fed by real
//! traffic, and the slow-start ramp of backends that join or recover. `state` holds one
//! backend's verdict and its rules, `probe` runs one check, `service` schedules checks
//! and publishes transitions, `carry` re-validates check state at a reload.

mod carry;
mod probe;
mod service;
mod state;

pub use carry::carry_checks;
pub use service::HealthService;
pub use state::Health;
