//! The agent's Prometheus metrics: a [`Snapshot`] the agent fills once per
//! scrape, [`render()`] to turn it into the text exposition format (through
//! the `prometheus-client` crate's encoder), and
//! [`serve`] for the small HTTP endpoint (`127.0.0.1:9964/metrics` by
//! default). What each metric means is in `docs/metrics.md`.
//!
//! Wiring it into the agent:
//!
//! 1. At start-up, with the other checks that fail before the data plane is
//!    touched: `let listener = metrics::bind(config.metrics_listen)?;`
//!    (its error is one sentence for the operator; exit 2).
//! 2. In the runtime: `tokio::net::TcpListener::from_std(listener)`, then
//!    spawn `metrics::serve(listener, snapshot, shutdown)`, where
//!    `snapshot` is an `Arc<dyn Fn() -> Snapshot + Send + Sync>` that
//!    locks the agent's state and copies numbers out (e.g.
//!    `Traffic::from(&dataplane.counters()?)`). It runs on a blocking
//!    thread, so a `std::sync::Mutex` is fine; it should not fail, and a
//!    panic in it is answered with 500 rather than taking the agent down.

mod http;
pub mod render;
pub mod server;
pub mod snapshot;

pub use render::{CONTENT_TYPE, render};
pub use server::{
    DEFAULT_LISTEN, DropCounters, MetricsError, ServerConfig, SnapshotFn, bind, serve, serve_with,
};
pub use snapshot::{
    AutobansRefused, BanTotals, BuildInfo, ControlDropped, ControlRequests, CrowdsecMetrics,
    FeedMetrics, HealthMetrics, InterfaceMetrics, MapMetrics, Reloads, Snapshot, Traffic,
};

#[cfg(test)]
mod tests;
