//! The HTTP API of qss (SPEC 2–6, 8): an axum router built by [`router`], separate from
//! binding a socket, so tests can drive it without a port. One module per resource; errors map
//! to status codes only in `error`.

pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod clock;
mod dashboard;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod ingest;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod page_token;
pub mod ratelimit;
pub mod schemas;
pub mod settings;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use qss_store::Store;
use tokio::sync::mpsc;

pub use cache::Accounts;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ApiError;
pub use ingest::IngestJob;
pub use metrics::Metrics;

/// Limits and settings of the API, from the server's configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub public_url: String,
    pub token_ttl_seconds: u64,
    pub max_body_bytes: usize,
    pub max_samples: usize,
    pub max_sample_age_seconds: i64,
    /// How long an ingest request waits for its commit before answering 503.
    pub ingest_commit_timeout_ms: u64,
    pub webhook_timeout_ms: u64,
    pub webhook_allow_private_networks: bool,
    pub webhook_revalidate_hours: u64,
}

/// Everything handlers share. Cloned per request (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub store: Store,
    pub accounts: Arc<Accounts>,
    pub auth: Arc<auth::TokenCache>,
    /// SHA-256 of the operator token.
    pub admin_token_hash: Arc<[u8; 32]>,
    /// Key that signs pagination tokens.
    pub page_key: Arc<[u8; 32]>,
    /// Accepted batches go to the aggregation thread, which answers once they are durable.
    pub ingest: mpsc::Sender<IngestJob>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// The SSRF-guarded client for handshakes (redirects off, proxies ignored).
    pub webhook_client: qss_delivery::client::DeliveryClient,
    /// Wakes the delivery workers when deliveries become due through the API.
    pub delivery_wake: Arc<tokio::sync::Notify>,
    /// Bumped on every change to a subscription, so the dispatcher knows when the records it
    /// holds are stale.
    pub webhooks_version: Arc<std::sync::atomic::AtomicU64>,
    /// Set when shutdown begins: `/readyz` answers 503.
    pub shutting_down: Arc<AtomicBool>,
    /// The rate limits' buckets (SPEC 2.2).
    pub limiter: Arc<ratelimit::Limiter>,
    /// `ingest.max_in_flight` permits: ingest batches between admission and their answer.
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ops::router())
        .merge(dashboard::router())
        .merge(oauth::router())
        .merge(admin::router())
        .merge(settings::router())
        .merge(ingest::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(deliveries::router())
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .layer(axum::middleware::map_response(error::json_for_empty_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}
