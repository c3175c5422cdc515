//! Backend health: active checks (run by [`HealthService`]), passive checks fed by real
//! traffic, and the slow-start ramp of backends that join or recover. `state` holds one
//! backend's verdict and its rules, `probe` runs one check, `service` schedules checks
//! and publishes transitions.

mod probe;
mod service;
mod state;

pub use service::HealthService;
pub use state::Health;
