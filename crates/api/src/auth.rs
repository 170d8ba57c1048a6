//! Authentication and authorisation (SPEC 3), in the order of the SPEC's precedence:
//! token (401/124), path account (403/200), scope (403/4711), QSS enabled (403/200).
//!
//! Tokens and ingest keys are looked up by their SHA-256; a short cache (one second) keeps
//! the database off the hot path while revocations still apply within a second on every node.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use qss_store::{Principal, hash_secret, hashes_equal};

use crate::{ApiError, AppState};

pub const SCOPE_READ: &str = "qss:read";
pub const SCOPE_WRITE: &str = "qss:write";
pub const SCOPE_INGEST: &str = "qss:ingest";
pub const ALL_SCOPES: [&str; 3] = [SCOPE_READ, SCOPE_WRITE, SCOPE_INGEST];

const CACHE_MS: i64 = 1000;
const CACHE_MAX: usize = 100_000;

/// A lookup's result (`None`: unknown or revoked) and when it was made.
type CacheEntry = (Option<Principal>, i64);

/// Recently verified bearer credentials, by hash.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
    /// An ingest key's `last_used_at` update is under way.
    touching: std::sync::atomic::AtomicBool,
}

impl TokenCache {
    fn get(&self, hash: &[u8; 32], now: i64) -> Option<Option<Principal>> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(hash)
            .filter(|(_, at)| now - at < CACHE_MS)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, hash: [u8; 32], principal: Option<Principal>, now: i64) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            map.retain(|_, (_, at)| now - *at < CACHE_MS);
        }
        map.insert(hash, (principal, now));
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The principal of the request's bearer token or ingest key (401/124 otherwise).
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = bearer(headers).ok_or(ApiError::InvalidToken)?;
    let now = state.clock.now_ms();
    let hash = hash_secret(token);
    if hashes_equal(&hash, state.admin_token_hash.as_slice()) {
        // The operator token is not an account token.
        return Err(ApiError::InvalidToken);
    }
    let principal = match state.auth.get(&hash, now) {
        Some(p) => p,
        None => {
            let store = &state.store;
            let found = match qss_domain::ids::split_ingest_key(token) {
                Some((key_id, secret)) => {
                    let found = store
                        .lookup_ingest_key(key_id, &hash_secret(secret))
                        .await?;
                    if found.is_some() {
                        touch_later(state, key_id, now);
                    }
                    found
                }
                None => store.lookup_token(&hash_secret(token)).await?,
            };
            state.auth.put(hash, found.clone(), now);
            found
        }
    };
    let principal = principal.ok_or(ApiError::InvalidToken)?;
    if principal.expires_at.is_some_and(|exp| now >= exp) {
        return Err(ApiError::ExpiredToken);
    }
    Ok(principal)
}

/// Records an ingest key's `last_used_at` in the background: at most once a second per key
/// (lookups are cached that long), and never on the request's path, so a store that cannot
/// write (overload, a stall) does not hold up authentication. While one update is under way,
/// others are skipped: `last_used_at` is a hint, not a log.
fn touch_later(state: &AppState, key_id: &str, now: i64) {
    if state
        .auth
        .touching
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    let (store, auth, used) = (
        state.store.clone(),
        state.auth.clone(),
        [(key_id.to_string(), now)],
    );
    tokio::spawn(async move {
        if let Err(e) = store.touch_ingest_keys(&used).await {
            tracing::debug!(error = %e, "could not record an ingest key's last use");
        }
        auth.touching
            .store(false, std::sync::atomic::Ordering::Release);
    });
}

/// Forgets cached lookups, after a revocation made through this process.
pub fn forget_all(state: &AppState) {
    state
        .auth
        .entries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}

/// The checks of an account endpoint, in the SPEC's order. `require_qss` is false only for
/// `GET .../qss/settings`.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    path_account: &str,
    scope: &'static str,
    require_qss: bool,
) -> Result<Principal, ApiError> {
    let principal = authenticate(state, headers).await?;
    if principal.account_id != path_account {
        return Err(ApiError::NoPermission(
            "No permission to access this account.",
        ));
    }
    if !principal.has_scope(scope) {
        return Err(ApiError::MissingScope(scope));
    }
    if require_qss {
        let enabled = state
            .accounts
            .fetch(&state.store, path_account)
            .await?
            .is_some_and(|a| a.qss_enabled());
        if !enabled {
            return Err(ApiError::NoPermission(
                "QSS is not enabled on this account (it needs a business or enterprise plan and the QSS add-on).",
            ));
        }
    }
    Ok(principal)
}

/// The operator's admin token (401/124 otherwise).
pub fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = bearer(headers).ok_or(ApiError::InvalidToken)?;
    if hashes_equal(&hash_secret(token), state.admin_token_hash.as_slice()) {
        Ok(())
    } else {
        Err(ApiError::InvalidToken)
    }
}
