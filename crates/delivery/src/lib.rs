//! qss webhook delivery (SPEC section 7), the parts that need no database:
//!
//! - [`signing`]: the Zoom and Standard Webhooks signatures, the URL-validation handshake, secret
//!   generation and the header set of one attempt;
//! - [`canonical`]: the body bytes Zoom's receivers verify (`JSON.stringify(JSON.parse(body))`);
//! - [`address`]: which IP addresses and URLs a webhook may target (the SSRF rules);
//! - [`client`]: the HTTP client that enforces those rules on the address actually connected to,
//!   and one delivery attempt with its result classified into the SPEC's error kinds;
//! - [`policy`]: what happens after an attempt (success, retry when, fail, disable, expire);
//! - [`handshake`]: the URL validation handshake.
//!
//! The delivery worker (claiming rows, leases, per-endpoint limits) lives with whoever owns the
//! store; it calls these functions and injects time and randomness, so everything here is
//! deterministic except the HTTP attempt itself. This crate never calls `api`.

pub mod address;
pub mod canonical;
pub mod client;
pub mod handshake;
pub mod policy;
pub mod signing;

pub use address::{UrlError, check_url, is_globally_reachable};
pub use canonical::{canonicalize, is_js_canonical};
pub use client::{AttemptError, AttemptResult, ClientConfig, DeliveryClient, RetryAfter, attempt};
pub use handshake::handshake;
pub use policy::{Outcome, decide};
pub use signing::{
    generate_secret, handshake_answer, headers, secret_is_well_formed, standard_signature,
    verify_handshake, zoom_signature,
};
