//! The webhook HTTP client and one delivery attempt (SPEC 7.4, 7.5).
//!
//! SSRF safety is enforced on the address actually connected to, not on what a name resolved to
//! at some earlier moment: reqwest asks the `SafeResolver` here for the addresses of every new
//! connection, and the resolver drops each one that is not globally reachable. A name that
//! resolves to a public address at validation time and to `169.254.169.254` later (DNS
//! rebinding) is therefore refused when it matters. IP-literal hosts never reach a resolver, so
//! [`attempt`] checks them itself before sending anything.
//!
//! Redirects are never followed (a 3xx is an answer, and following it would bypass the URL
//! check), proxy environment variables are ignored, and only the first 2,048 bytes of a response
//! body are read.

use crate::address::{UrlError, check_url, is_globally_reachable};
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[cfg(test)]
mod tests;

/// The error type reqwest's resolver interface carries.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// SPEC 7.5: the delivery log keeps the first 2,048 bytes of each response body.
pub const MAX_RESPONSE_BODY_BYTES: usize = 2048;

/// How the webhook client behaves; built from `webhook.*` settings by the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bound on connecting (`webhook.timeout_ms`); each attempt also passes its own total timeout.
    pub timeout: Duration,
    /// `webhook.allow_private_networks`: allow `http` and non-global addresses (tests, demos).
    pub allow_private: bool,
    /// Idle keep-alive connections kept per host; `webhook.max_in_flight_per_endpoint` is a
    /// sensible value, since no more than that can be busy at once.
    pub max_idle_per_host: usize,
}

/// The HTTP client every attempt goes through. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    allow_private: bool,
    lookup: Lookup,
}

impl DeliveryClient {
    /// Builds the client. Fails only if the TLS backend cannot be initialised.
    pub fn new(config: &ClientConfig) -> Result<Self, reqwest::Error> {
        Self::with_lookup(config, Lookup::System)
    }

    fn with_lookup(config: &ClientConfig, lookup: Lookup) -> Result<Self, reqwest::Error> {
        let resolver = SafeResolver {
            allow_private: config.allow_private,
            lookup: lookup.clone(),
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            // The stored response prefix should be the bytes the receiver sent; decompressing
            // would also let a tiny compressed reply expand before the cap applies.
            .no_gzip()
            .https_only(!config.allow_private)
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.max_idle_per_host)
            .tcp_keepalive(Duration::from_secs(60))
            .dns_resolver(Arc::new(resolver))
            .build()?;
        Ok(Self {
            http,
            allow_private: config.allow_private,
            lookup,
        })
    }

    /// Whether private networks are allowed (`webhook.allow_private_networks`).
    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Checks the addresses a URL's host resolves to now, for the API to refuse at creation (or
    /// URL change) a name that resolves only to addresses that are not globally reachable. The
    /// verdict is only a snapshot, which is why the resolver checks again on every connection.
    /// A name that does not resolve at all is accepted here: it may simply not be set up yet,
    /// and attempts will report it as `dns`.
    pub async fn check_resolved_host(&self, url: &url::Url) -> Result<(), UrlError> {
        let Some(host) = url.host_str() else {
            return Err(UrlError::NoHost);
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(resolved) = resolve(&self.lookup, host).await else {
            return Ok(());
        };
        match allowed_addresses(resolved, self.allow_private) {
            Err(e) if e.is::<AddressRefused>() => Err(UrlError::RefusedAddress),
            _ => Ok(()),
        }
    }
}

/// Where a resolver gets addresses from. Tests substitute fixed answers so that no test ever
/// sends a DNS query (the configured nameserver is not on loopback).
#[derive(Debug, Clone)]
enum Lookup {
    System,
    #[cfg(test)]
    Fixed(Vec<IpAddr>),
}

/// A resolver that only hands out globally reachable addresses (unless private networks are
/// allowed), so the SSRF check applies to every address reqwest connects to.
#[derive(Debug)]
struct SafeResolver {
    allow_private: bool,
    lookup: Lookup,
}

impl Resolve for SafeResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let resolved = resolve(&lookup, name.as_str()).await?;
            let allowed = allowed_addresses(resolved, allow_private).inspect_err(|e| {
                tracing::warn!(host = name.as_str(), error = %e, "webhook host not resolved");
            })?;
            Ok::<Addrs, BoxError>(Box::new(allowed.into_iter()))
        })
    }
}

/// All addresses of `host`, with port 0 (reqwest substitutes the URL's port or the scheme's).
/// An IP literal is returned as is, without a query.
async fn resolve(lookup: &Lookup, host: &str) -> Result<Vec<SocketAddr>, DnsFailure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, 0)]);
    }
    match lookup {
        Lookup::System => Ok(tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| DnsFailure(e.to_string()))?
            .collect()),
        #[cfg(test)]
        Lookup::Fixed(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect()),
    }
}

/// The addresses a connection may use: all of them when private networks are allowed, else the
/// globally reachable ones. No address at all is a DNS failure; addresses that were all dropped
/// are a refusal, which is final rather than retried.
fn allowed_addresses(
    resolved: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, BoxError> {
    if resolved.is_empty() {
        return Err(Box::new(DnsFailure("no addresses".to_owned())));
    }
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| allow_private || is_globally_reachable(addr.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(Box::new(AddressRefused));
    }
    Ok(allowed)
}

/// The resolver's error when a name resolved only to addresses that are not globally reachable.
/// [`attempt`] finds it in reqwest's error chain to report `refused_address`.
#[derive(Debug, thiserror::Error)]
#[error("address refused: not globally reachable")]
struct AddressRefused;

/// The resolver's error when a name could not be resolved; reported as `dns`.
#[derive(Debug, thiserror::Error)]
#[error("dns lookup failed: {0}")]
struct DnsFailure(String);

/// Why an attempt did not get a 2xx, in the SPEC 7.5 vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptError {
    Timeout,
    Connect,
    Dns,
    Tls,
    RefusedAddress,
    /// The endpoint answered, with a status other than 2xx.
    HttpStatus,
}

impl AttemptError {
    /// The name used in the delivery log (`last_attempt.error`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptError::Timeout => "timeout",
            AttemptError::Connect => "connect",
            AttemptError::Dns => "dns",
            AttemptError::Tls => "tls",
            AttemptError::RefusedAddress => "refused_address",
            AttemptError::HttpStatus => "http_status",
        }
    }

    /// The inverse of [`AttemptError::as_str`], for reading the delivery log back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            AttemptError::Timeout,
            AttemptError::Connect,
            AttemptError::Dns,
            AttemptError::Tls,
            AttemptError::RefusedAddress,
            AttemptError::HttpStatus,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A valid `Retry-After` header: a delay in seconds or an HTTP date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    Delay(Duration),
    At(SystemTime),
}

impl RetryAfter {
    /// Parses a header value; anything else than non-negative integer seconds or an HTTP date
    /// (RFC 9110 10.2.3) is invalid and ignored, so the scheduled delay applies.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Absurdly long digit strings saturate; the policy caps the wait anyway.
            let secs = value.parse::<u64>().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(secs)));
        }
        httpdate::parse_http_date(value).ok().map(RetryAfter::At)
    }
}

/// What one attempt produced, ready for the delivery log and for [`crate::policy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The response status, when the endpoint answered.
    pub http_status: Option<u16>,
    /// `None` exactly when the status is 2xx.
    pub error: Option<AttemptError>,
    pub duration_ms: u64,
    /// The first 2,048 bytes of the response body, invalid UTF-8 replaced.
    pub response_body: String,
    pub retry_after: Option<RetryAfter>,
}

/// Makes one POST of `body` to `url` with `headers` (from [`crate::signing::headers`]), bounded
/// by `timeout` from start to the end of reading the (capped) response body. Never fails: every
/// outcome is an [`AttemptResult`], so the caller records it and asks the policy what next.
///
/// The URL is checked again here, because `webhook.allow_private_networks` may have changed since
/// the subscription was saved and because IP-literal hosts bypass the resolver. A URL that fails
/// the check is a `refused_address`, which is not retried.
pub async fn attempt(
    client: &DeliveryClient,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
    timeout: Duration,
) -> AttemptResult {
    let started = Instant::now();
    let url = match check_url(url, client.allow_private) {
        Ok(url) => url,
        Err(reason) => {
            tracing::warn!(%reason, "webhook url refused before connecting");
            return failure(AttemptError::RefusedAddress, started);
        }
    };
    let mut request = client.http.post(url).timeout(timeout).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let kind = classify(&e);
            tracing::debug!(error = %kind, cause = %error_chain(&e), "webhook attempt failed");
            return failure(kind, started);
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(RetryAfter::parse);
    let response_body = read_prefix(&mut response, MAX_RESPONSE_BODY_BYTES).await;
    AttemptResult {
        http_status: Some(status.as_u16()),
        error: (!status.is_success()).then_some(AttemptError::HttpStatus),
        duration_ms: elapsed_ms(started),
        response_body,
        retry_after,
    }
}

fn failure(kind: AttemptError, started: Instant) -> AttemptResult {
    AttemptResult {
        http_status: None,
        error: Some(kind),
        duration_ms: elapsed_ms(started),
        response_body: String::new(),
        retry_after: None,
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads at most `limit` bytes of the body and drops the rest (and with it the connection, which
/// is cheaper than draining a large or endless body). The status is already the outcome, so an
/// error or timeout while reading only shortens what is kept.
async fn read_prefix(response: &mut reqwest::Response, limit: usize) -> String {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - kept.len());
                kept.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Maps a reqwest error to the SPEC's error kinds. reqwest does not expose DNS or TLS failures
/// as such, so the error's causes are searched: the resolver's own error types mark DNS failures
/// and refusals, and TLS failures surface from tokio-rustls as an `io::Error` of kind
/// `InvalidData` raised while connecting (plain TCP connects never produce that kind).
fn classify(error: &reqwest::Error) -> AttemptError {
    let has = |pred: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool| causes(error).any(pred);
    if has(&|e| e.is::<AddressRefused>()) {
        AttemptError::RefusedAddress
    } else if has(&|e| e.is::<DnsFailure>()) {
        AttemptError::Dns
    } else if error.is_timeout() {
        AttemptError::Timeout
    } else if error.is_connect()
        && has(&|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        })
    {
        AttemptError::Tls
    } else {
        // Refused or reset connections, and a peer that closes mid-request or sends something
        // that is not HTTP: all transport failures, retried like a failed connect.
        AttemptError::Connect
    }
}

/// An error followed by its causes. `io::Error::source` skips the error it wraps and returns
/// that error's source, so the wrapped error is visited explicitly (tokio-rustls wraps its TLS
/// errors that way).
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

/// The causes on one line, for logs (reqwest's top-level message alone says little). A wrapping
/// `io::Error` displays as the error it wraps, so repeats are dropped.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = causes(error).map(|e| e.to_string()).collect();
    parts.dedup();
    parts.join(": ")
}
