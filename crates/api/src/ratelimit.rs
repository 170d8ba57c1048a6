//! Rate limits (SPEC 2.2): token buckets per account and category, and per `client_id` for
//! `/oauth/token`. A bucket holds one second of tokens and refills continuously, on the
//! monotonic clock (rate limits are about real time, whatever the service's clock says).
//!
//! On PostgreSQL each node enforces its share of every limit, `limit / live nodes`, so the
//! whole cluster admits no more than the limit (plus one second's burst), with no database
//! round trip on the hot path. A client whose requests all reach one node gets that node's
//! share only; behind a load balancer that spreads requests, it gets the whole limit.
//! `X-RateLimit-Remaining` estimates the cluster's remaining tokens from this node's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

/// Buckets kept before full ones (which are the same as no bucket) are dropped.
const MAX_BUCKETS: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Light,
    Heavy,
    Ingest,
    /// `/oauth/token`, per `client_id`.
    OAuth,
}

impl Category {
    pub fn header_value(self) -> &'static str {
        match self {
            Category::Light => "Light",
            Category::Heavy => "Heavy",
            Category::Ingest => "Ingest",
            Category::OAuth => "OAuth",
        }
    }

    /// The category of a `/v2` request (SPEC 2.2); routes that do not exist are light.
    pub fn of(method: &Method, path: &str) -> Category {
        let path = path.trim_end_matches('/');
        if path.ends_with("/qss/telemetry") {
            Category::Ingest
        } else if path.ends_with("/qss/events")
            || path.ends_with("/replay")
            || (*method == Method::GET && is_delivery_read(path))
        {
            Category::Heavy
        } else {
            Category::Light
        }
    }
}

/// `.../deliveries` or `.../deliveries/{id}` (not `.../retry`).
fn is_delivery_read(path: &str) -> bool {
    let mut segments = path.rsplit('/');
    let last = segments.next().unwrap_or("");
    last == "deliveries" || segments.next() == Some("deliveries")
}

/// Requests per second by category; 0 turns a limit off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub light: u32,
    pub heavy: u32,
    pub ingest: u32,
    pub oauth: u32,
}

impl RateLimits {
    pub fn of(&self, category: Category) -> u32 {
        match category {
            Category::Light => self.light,
            Category::Heavy => self.heavy,
            Category::Ingest => self.ingest,
            Category::OAuth => self.oauth,
        }
    }
}

/// What a request got from its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Served; about this many requests remain in the current second.
    Allowed { limit: u32, remaining: u32 },
    /// Refused; a token is available in this many seconds (at least 1).
    Limited { limit: u32, retry_after: u64 },
    /// The category has no limit.
    Unlimited,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Seconds from empty to full.
    fill_seconds: f64,
}

#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    live_nodes: Arc<AtomicUsize>,
    buckets: Mutex<HashMap<(Category, String), Bucket>>,
}

impl Limiter {
    pub fn new(limits: RateLimits, live_nodes: Arc<AtomicUsize>) -> Self {
        Limiter {
            limits,
            live_nodes,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` (an account id, or a client id for OAuth) if one is there.
    pub fn take(&self, category: Category, key: &str, now: Instant) -> Decision {
        let limit = self.limits.of(category);
        if limit == 0 {
            return Decision::Unlimited;
        }
        let nodes = self.live_nodes.load(Ordering::Relaxed).max(1) as f64;
        // This node's share: its refill per second, and its burst (at least one request).
        let rate = f64::from(limit) / nodes;
        let capacity = rate.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets are the same as none. Should most be in use (a flood of distinct
            // client ids), all are forgotten, which errs on serving, rather than scanning
            // the map on every request.
            buckets
                .retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < b.fill_seconds);
            if buckets.len() >= MAX_BUCKETS / 2 {
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry((category, key.to_string()))
            .or_insert(Bucket {
                tokens: capacity,
                at: now,
                fill_seconds: capacity / rate,
            });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            let remaining = (bucket.tokens * nodes).floor().min(f64::from(limit)) as u32;
            Decision::Allowed { limit, remaining }
        } else {
            let retry_after = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
            Decision::Limited { limit, retry_after }
        }
    }

    /// What a request that takes no token would be told.
    pub fn peek(&self, category: Category) -> Decision {
        match self.limits.of(category) {
            0 => Decision::Unlimited,
            limit => Decision::Allowed {
                limit,
                remaining: limit,
            },
        }
    }
}

/// The 429 of SPEC 2.2: the catalogue's body, `X-RateLimit-Type: QPS` and `Retry-After`.
pub fn limited_response(retry_after: u64) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"code": 429, "message": "You have reached the maximum per-second rate limit for this API. Try again later."})),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert("x-ratelimit-type", HeaderValue::from_static("QPS"));
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    r
}

/// `/v2/accounts/{accountId}/...` → the account id.
fn path_account(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/accounts/")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|a| !a.is_empty())
}

/// The client id of a Basic `Authorization` header, for `/oauth/token`.
fn basic_client_id(headers: &HeaderMap) -> Option<String> {
    crate::oauth::basic_credentials(headers).map(|(id, _)| id)
}

/// The middleware: limits `/v2` by the token's account and category and `/oauth/token` by
/// client id; every `/v2` response carries the category, the limit and what remains.
///
/// A request that fails authentication, or names another account, takes no token: its
/// 401 or 403 comes first (SPEC 2's precedence), from the handler.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let now = Instant::now();
    if path == "/oauth/token" {
        if let Some(client_id) = basic_client_id(request.headers())
            && let Decision::Limited { retry_after, .. } =
                state.limiter.take(Category::OAuth, &client_id, now)
        {
            return limited_response(retry_after);
        }
        return next.run(request).await;
    }
    if !path.starts_with("/v2/") {
        return next.run(request).await;
    }
    let category = Category::of(request.method(), path);
    let account = path_account(path).map(str::to_string);
    let principal = crate::auth::authenticate(&state, request.headers())
        .await
        .ok();
    let decision = match (principal, account) {
        (Some(p), Some(account)) if p.account_id == account => {
            state.limiter.take(category, &account, now)
        }
        _ => state.limiter.peek(category),
    };
    let mut response = match decision {
        Decision::Limited { retry_after, .. } => {
            state.metrics.rate_limited(category.header_value());
            limited_response(retry_after)
        }
        _ => next.run(request).await,
    };
    let h = response.headers_mut();
    h.insert(
        "x-ratelimit-category",
        HeaderValue::from_static(category.header_value()),
    );
    let (limit, remaining) = match decision {
        Decision::Allowed { limit, remaining } => (Some(limit), Some(remaining)),
        Decision::Limited { limit, .. } => (Some(limit), Some(0)),
        Decision::Unlimited => (None, None),
    };
    if let (Some(limit), Some(remaining)) = (limit, remaining) {
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(light: u32, nodes: usize) -> Limiter {
        Limiter::new(
            RateLimits {
                light,
                heavy: 40,
                ingest: 0,
                oauth: 10,
            },
            Arc::new(AtomicUsize::new(nodes)),
        )
    }

    #[test]
    fn a_bucket_holds_one_second_and_refills_continuously() {
        let l = limiter(4, 1);
        let t0 = Instant::now();
        let taken: Vec<Decision> = (0..5).map(|_| l.take(Category::Light, "a", t0)).collect();
        assert_eq!(
            taken[..4],
            [3, 2, 1, 0].map(|remaining| Decision::Allowed {
                limit: 4,
                remaining
            })
        );
        assert_eq!(
            taken[4],
            Decision::Limited {
                limit: 4,
                retry_after: 1
            }
        );
        // A quarter of a second later, one token is back; another account is untouched.
        let t1 = t0 + Duration::from_millis(250);
        assert!(matches!(
            l.take(Category::Light, "a", t1),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            l.take(Category::Light, "a", t1),
            Decision::Limited { .. }
        ));
        assert!(matches!(
            l.take(Category::Light, "b", t1),
            Decision::Allowed { remaining: 3, .. }
        ));
        // And categories are separate buckets.
        assert!(matches!(
            l.take(Category::Heavy, "a", t1),
            Decision::Allowed { limit: 40, .. }
        ));
    }

    #[test]
    fn retry_after_is_the_wait_for_a_token_and_at_least_one_second() {
        let l = limiter(1, 4); // a quarter request per second on this node
        let t0 = Instant::now();
        assert!(matches!(
            l.take(Category::Light, "a", t0),
            Decision::Allowed { .. }
        ));
        assert_eq!(
            l.take(Category::Light, "a", t0),
            Decision::Limited {
                limit: 1,
                retry_after: 4
            }
        );
    }

    #[test]
    fn each_node_takes_its_share_of_the_limit() {
        let l = limiter(90, 3);
        let t0 = Instant::now();
        let served = (0..100)
            .filter(|_| matches!(l.take(Category::Light, "a", t0), Decision::Allowed { .. }))
            .count();
        assert_eq!(served, 30);
        // Over two more seconds, it refills at 30 per second.
        let t2 = t0 + Duration::from_secs(2);
        let served = (0..100)
            .filter(|_| matches!(l.take(Category::Light, "a", t2), Decision::Allowed { .. }))
            .count();
        assert_eq!(served, 30, "the burst is one second's share, not two");
    }

    #[test]
    fn a_zero_limit_is_no_limit() {
        let l = limiter(80, 1);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.take(Category::Ingest, "a", t0), Decision::Unlimited);
        }
    }

    #[test]
    fn routes_fall_in_the_specs_categories() {
        let base = "/v2/accounts/a/qss";
        for (method, path, category) in [
            (Method::POST, format!("{base}/telemetry"), Category::Ingest),
            (Method::GET, format!("{base}/events"), Category::Heavy),
            (
                Method::GET,
                format!("{base}/webhooks/w/deliveries"),
                Category::Heavy,
            ),
            (
                Method::GET,
                format!("{base}/webhooks/w/deliveries/d"),
                Category::Heavy,
            ),
            (
                Method::POST,
                format!("{base}/webhooks/w/replay"),
                Category::Heavy,
            ),
            (
                Method::POST,
                format!("{base}/webhooks/w/deliveries/d/retry"),
                Category::Light,
            ),
            (Method::GET, format!("{base}/settings"), Category::Light),
            (Method::PATCH, format!("{base}/settings"), Category::Light),
            (
                Method::POST,
                format!("{base}/webhooks/w/validate"),
                Category::Light,
            ),
            (
                Method::POST,
                format!("{base}/webhooks/w/rotate_secret"),
                Category::Light,
            ),
            (Method::GET, format!("{base}/nothing-here"), Category::Light),
        ] {
            assert_eq!(Category::of(&method, &path), category, "{method} {path}");
        }
        assert_eq!(path_account("/v2/accounts/abc/qss/events"), Some("abc"));
        assert_eq!(path_account("/v2/accounts/"), None);
        assert_eq!(path_account("/v2/other"), None);
    }
}
