//! Storage for qss. This is the only crate that contains SQL (ARCHITECTURE.md). The SQLite
//! backend is the embedded default; its methods are blocking and are called from a dedicated
//! writer thread (ingest and aggregation) or from `spawn_blocking` (API reads and admin writes).
//! The PostgreSQL backend (SPEC 10) is `postgres`, shared by several nodes; `Store` is the
//! async interface over both (docs/postgres-design.md).

mod columns;
mod error;
pub mod model;
pub mod postgres;
pub mod sqlite;
mod store;

pub use error::StoreError;
pub use model::*;
pub use postgres::{Lease, NewSample, PartSample, PgStore};
pub use sqlite::{MAX_WEBHOOKS, NewAccount, SqliteStore, WriteBatch};
pub use store::Store;

/// Aggregation partitions on PostgreSQL (the `partitions` table has this many rows).
pub const PARTITIONS: i32 = 64;

/// The aggregation partition of a meeting or call: FNV-1a of the account and the meeting or
/// call id. Every node must agree, so this never changes for a database.
pub fn partition_of(account_id: &str, series_id: &str) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account_id
        .bytes()
        .chain(std::iter::once(0x1f))
        .chain(series_id.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % PARTITIONS as u64) as i32
}

/// Most rows one retention statement deletes (SPEC 10), on either backend.
pub const RETENTION_BATCH: usize = 5000;

/// The `client_id` of access tokens the operator issues for an account
/// (`POST /admin/accounts/{id}/tokens`, the dashboard's operator sign-in). No generated client
/// id has parentheses, and such a token outlives no credential: only its account and expiry.
pub const OPERATOR_CLIENT_ID: &str = "(operator)";

/// SHA-256 of a secret: how tokens, keys and client secrets are stored (SPEC 3.1).
pub fn hash_secret(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
