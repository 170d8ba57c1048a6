//! The storage interface (SPEC 10): one type over both backends, async (plan:
//! docs/postgres-design.md). The SQLite arm runs the blocking `SqliteStore` on tokio's blocking
//! pool; the PostgreSQL arm is native async. Every store operation is here; the server, API and
//! dispatcher still call `SqliteStore` directly until they move onto this type.

use std::collections::HashMap;
use std::sync::Arc;

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{
    AccountRecord, AttemptRecord, AttemptRow, ClaimedDelivery, DeliveryRecord, EventQuery,
    EventRow, IngestKeyRecord, InstanceRow, NewAccount, Principal, StoreError, StoredSample,
    WebhookRecord, WriteBatch,
};

#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(Arc<SqliteStore>),
    Postgres(PgStore),
}

/// Runs a blocking SQLite operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    s: &Arc<SqliteStore>,
    f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
}

impl Store {
    /// The SQLite store behind this one, if that is the backend (SQLite-only tools: the
    /// benchmarks' bulk fill, the database path).
    pub fn as_sqlite(&self) -> Option<&Arc<SqliteStore>> {
        match self {
            Store::Sqlite(s) => Some(s),
            Store::Postgres(_) => None,
        }
    }

    /// True when the database answers a trivial query (`/readyz`).
    pub async fn ping(&self) -> bool {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || s.ping())
                    .await
                    .unwrap_or(false)
            }
            Store::Postgres(p) => p.ping().await,
        }
    }

    pub async fn create_account(&self, new: &NewAccount<'_>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let account = new.account.clone();
                let (client_id, client_secret_hash, scopes, key_id, key_secret_hash) = (
                    new.client_id.to_owned(),
                    new.client_secret_hash.to_vec(),
                    new.scopes.to_owned(),
                    new.key_id.to_owned(),
                    new.key_secret_hash.to_vec(),
                );
                blocking(s, move |s| {
                    s.create_account(&NewAccount {
                        account: &account,
                        client_id: &client_id,
                        client_secret_hash: &client_secret_hash,
                        scopes: &scopes,
                        key_id: &key_id,
                        key_secret_hash: &key_secret_hash,
                    })
                })
                .await
            }
            Store::Postgres(p) => p.create_account(new).await,
        }
    }

    pub async fn get_account(&self, account_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let id = account_id.to_owned();
                blocking(s, move |s| s.get_account(&id)).await
            }
            Store::Postgres(p) => p.get_account(account_id).await,
        }
    }

    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let after = after.map(str::to_owned);
                blocking(s, move |s| s.list_accounts(after.as_deref(), limit)).await
            }
            Store::Postgres(p) => p.list_accounts(after, limit).await,
        }
    }

    pub async fn all_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.all_accounts()).await,
            Store::Postgres(p) => p.all_accounts().await,
        }
    }

    pub async fn update_account(&self, a: &AccountRecord) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let a = a.clone();
                blocking(s, move |s| s.update_account(&a)).await
            }
            Store::Postgres(p) => p.update_account(a).await,
        }
    }

    pub async fn delete_account(&self, account_id: &str, now: i64) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let id = account_id.to_owned();
                blocking(s, move |s| s.delete_account(&id, now)).await
            }
            Store::Postgres(p) => p.delete_account(account_id, now).await,
        }
    }

    pub async fn create_credentials(
        &self,
        account_id: &str,
        client_id: &str,
        secret_hash: &[u8],
        scopes: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, c, h, sc) = (
                    account_id.to_owned(),
                    client_id.to_owned(),
                    secret_hash.to_vec(),
                    scopes.to_owned(),
                );
                blocking(s, move |s| s.create_credentials(&a, &c, &h, &sc, now)).await
            }
            Store::Postgres(p) => {
                p.create_credentials(account_id, client_id, secret_hash, scopes, now)
                    .await
            }
        }
    }

    pub async fn revoke_credentials(
        &self,
        account_id: &str,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, c) = (account_id.to_owned(), client_id.to_owned());
                blocking(s, move |s| s.revoke_credentials(&a, &c, now)).await
            }
            Store::Postgres(p) => p.revoke_credentials(account_id, client_id, now).await,
        }
    }

    pub async fn verify_client(
        &self,
        account_id: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, c, h) = (
                    account_id.to_owned(),
                    client_id.to_owned(),
                    secret_hash.to_vec(),
                );
                blocking(s, move |s| s.verify_client(&a, &c, &h)).await
            }
            Store::Postgres(p) => p.verify_client(account_id, client_id, secret_hash).await,
        }
    }

    pub async fn insert_token(
        &self,
        token_hash: &[u8],
        account_id: &str,
        client_id: &str,
        scopes: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (h, a, c, sc) = (
                    token_hash.to_vec(),
                    account_id.to_owned(),
                    client_id.to_owned(),
                    scopes.to_owned(),
                );
                blocking(s, move |s| s.insert_token(&h, &a, &c, &sc, expires_at)).await
            }
            Store::Postgres(p) => {
                p.insert_token(token_hash, account_id, client_id, scopes, expires_at)
                    .await
            }
        }
    }

    pub async fn lookup_token(&self, token_hash: &[u8]) -> Result<Option<Principal>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let h = token_hash.to_vec();
                blocking(s, move |s| s.lookup_token(&h)).await
            }
            Store::Postgres(p) => p.lookup_token(token_hash).await,
        }
    }

    pub async fn purge_expired_tokens(&self, before: i64) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.purge_expired_tokens(before)).await,
            Store::Postgres(p) => p.purge_expired_tokens(before).await,
        }
    }

    pub async fn create_ingest_key(
        &self,
        account_id: &str,
        key_id: &str,
        secret_hash: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, k, h) = (
                    account_id.to_owned(),
                    key_id.to_owned(),
                    secret_hash.to_vec(),
                );
                blocking(s, move |s| s.create_ingest_key(&a, &k, &h, now)).await
            }
            Store::Postgres(p) => {
                p.create_ingest_key(account_id, key_id, secret_hash, now)
                    .await
            }
        }
    }

    pub async fn list_ingest_keys(
        &self,
        account_id: &str,
    ) -> Result<Vec<IngestKeyRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let a = account_id.to_owned();
                blocking(s, move |s| s.list_ingest_keys(&a)).await
            }
            Store::Postgres(p) => p.list_ingest_keys(account_id).await,
        }
    }

    pub async fn revoke_ingest_key(
        &self,
        account_id: &str,
        key_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, k) = (account_id.to_owned(), key_id.to_owned());
                blocking(s, move |s| s.revoke_ingest_key(&a, &k, now)).await
            }
            Store::Postgres(p) => p.revoke_ingest_key(account_id, key_id, now).await,
        }
    }

    pub async fn lookup_ingest_key(
        &self,
        key_id: &str,
        secret_hash: &[u8],
    ) -> Result<Option<Principal>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (k, h) = (key_id.to_owned(), secret_hash.to_vec());
                blocking(s, move |s| s.lookup_ingest_key(&k, &h)).await
            }
            Store::Postgres(p) => p.lookup_ingest_key(key_id, secret_hash).await,
        }
    }

    pub async fn touch_ingest_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let used = used.to_vec();
                blocking(s, move |s| s.touch_ingest_keys(&used)).await
            }
            Store::Postgres(p) => p.touch_ingest_keys(used).await,
        }
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let k = key.to_owned();
                blocking(s, move |s| s.get_meta(&k)).await
            }
            Store::Postgres(p) => p.get_meta(key).await,
        }
    }

    pub async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (k, v) = (key.to_owned(), value.to_owned());
                blocking(s, move |s| s.init_meta(&k, &v)).await
            }
            Store::Postgres(p) => p.init_meta(key, value).await,
        }
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (k, v) = (key.to_owned(), value.to_owned());
                blocking(s, move |s| s.set_meta(&k, &v)).await
            }
            Store::Postgres(p) => p.set_meta(key, value).await,
        }
    }

    /// Takes the batch by value: the SQLite arm moves it to the blocking pool uncopied.
    pub async fn commit(&self, batch: WriteBatch) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.commit(&batch)).await,
            Store::Postgres(p) => p.commit(&batch).await,
        }
    }

    pub async fn next_sample_seq(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.next_sample_seq()).await,
            Store::Postgres(p) => p.next_sample_seq().await,
        }
    }

    pub async fn replay_from(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.replay_from()).await,
            Store::Postgres(p) => p.replay_from().await,
        }
    }

    /// The lowest sample `seq` that rebuilding aggregation state may still need: retention
    /// keeps everything from here on. On PostgreSQL, the lowest watermark of any partition.
    pub async fn samples_needed_from(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.replay_from()).await,
            Store::Postgres(p) => p.samples_needed_from().await,
        }
    }

    pub async fn samples_from(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<Vec<StoredSample>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.samples_from(from, limit)).await,
            Store::Postgres(p) => p.samples_from(from, limit).await,
        }
    }

    pub async fn unfinished_instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.unfinished_instances()).await,
            Store::Postgres(p) => p.unfinished_instances().await,
        }
    }

    pub async fn closed_instances_since(&self, since: i64) -> Result<Vec<InstanceRow>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.closed_instances_since(since)).await,
            Store::Postgres(p) => p.closed_instances_since(since).await,
        }
    }

    pub async fn existing_dedup_keys(
        &self,
        account_id: &str,
        keys: &[String],
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, keys) = (account_id.to_owned(), keys.to_vec());
                blocking(s, move |s| s.existing_dedup_keys(&a, &keys)).await
            }
            Store::Postgres(p) => p.existing_dedup_keys(account_id, keys).await,
        }
    }

    pub async fn max_event_seq(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.max_event_seq()).await,
            Store::Postgres(p) => p.max_event_seq().await,
        }
    }

    pub async fn list_events(&self, q: &EventQuery) -> Result<Vec<EventRow>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let q = q.clone();
                blocking(s, move |s| s.list_events(&q)).await
            }
            Store::Postgres(p) => p.list_events(q).await,
        }
    }

    pub async fn insert_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let w = w.clone();
                blocking(s, move |s| s.insert_webhook(&w)).await
            }
            Store::Postgres(p) => p.insert_webhook(w).await,
        }
    }

    pub async fn get_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, w) = (account_id.to_owned(), webhook_id.to_owned());
                blocking(s, move |s| s.get_webhook(&a, &w)).await
            }
            Store::Postgres(p) => p.get_webhook(account_id, webhook_id).await,
        }
    }

    pub async fn list_webhooks(&self, account_id: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let a = account_id.to_owned();
                blocking(s, move |s| s.list_webhooks(&a)).await
            }
            Store::Postgres(p) => p.list_webhooks(account_id).await,
        }
    }

    pub async fn webhooks_due_for_validation(
        &self,
        now: i64,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.webhooks_due_for_validation(now)).await,
            Store::Postgres(p) => p.webhooks_due_for_validation(now).await,
        }
    }

    pub async fn webhooks_with_due_work(&self, now: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.webhooks_with_due_work(now)).await,
            Store::Postgres(p) => p.webhooks_with_due_work(now).await,
        }
    }

    pub async fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let w = w.clone();
                blocking(s, move |s| s.update_webhook(&w)).await
            }
            Store::Postgres(p) => p.update_webhook(w).await,
        }
    }

    pub async fn delete_webhook(
        &self,
        account_id: &str,
        webhook_id: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, w) = (account_id.to_owned(), webhook_id.to_owned());
                blocking(s, move |s| s.delete_webhook(&a, &w)).await
            }
            Store::Postgres(p) => p.delete_webhook(account_id, webhook_id).await,
        }
    }

    pub async fn claim_due(
        &self,
        account_id: &str,
        webhook_id: &str,
        now: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, w) = (account_id.to_owned(), webhook_id.to_owned());
                blocking(s, move |s| s.claim_due(&a, &w, now, limit, lease_ms)).await
            }
            Store::Postgres(p) => {
                p.claim_due(account_id, webhook_id, now, limit, lease_ms)
                    .await
            }
        }
    }

    pub async fn release_claims(&self, claims: &[ClaimedDelivery]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let claims = claims.to_vec();
                blocking(s, move |s| s.release_claims(&claims)).await
            }
            Store::Postgres(p) => p.release_claims(claims).await,
        }
    }

    pub async fn record_attempts(&self, results: &[AttemptRecord]) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let results = results.to_vec();
                blocking(s, move |s| s.record_attempts(&results)).await
            }
            Store::Postgres(p) => p.record_attempts(results).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn list_deliveries(
        &self,
        account_id: &str,
        webhook_id: &str,
        status: Option<&str>,
        event_type: Option<&str>,
        from: i64,
        to: i64,
        before: Option<(i64, String)>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, w) = (account_id.to_owned(), webhook_id.to_owned());
                let (st, et) = (status.map(str::to_owned), event_type.map(str::to_owned));
                blocking(s, move |s| {
                    s.list_deliveries(
                        &a,
                        &w,
                        st.as_deref(),
                        et.as_deref(),
                        from,
                        to,
                        before,
                        limit,
                        now,
                    )
                })
                .await
            }
            Store::Postgres(p) => {
                p.list_deliveries(
                    account_id, webhook_id, status, event_type, from, to, before, limit, now,
                )
                .await
            }
        }
    }

    pub async fn get_delivery(
        &self,
        account_id: &str,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<Option<(DeliveryRecord, Vec<AttemptRow>)>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, w, d) = (
                    account_id.to_owned(),
                    webhook_id.to_owned(),
                    delivery_id.to_owned(),
                );
                blocking(s, move |s| s.get_delivery(&a, &w, &d, now)).await
            }
            Store::Postgres(p) => {
                p.get_delivery(account_id, webhook_id, delivery_id, now)
                    .await
            }
        }
    }

    pub async fn retry_delivery(
        &self,
        account_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, d) = (account_id.to_owned(), delivery_id.to_owned());
                blocking(s, move |s| s.retry_delivery(&a, &d, now)).await
            }
            Store::Postgres(p) => p.retry_delivery(account_id, delivery_id, now).await,
        }
    }

    pub async fn replay(
        &self,
        account_id: &str,
        webhook_id: &str,
        types: &[String],
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, w, t) = (account_id.to_owned(), webhook_id.to_owned(), types.to_vec());
                blocking(s, move |s| s.replay(&a, &w, &t, from, to, now)).await
            }
            Store::Postgres(p) => p.replay(account_id, webhook_id, types, from, to, now).await,
        }
    }

    pub async fn count_events(
        &self,
        account_id: &str,
        types: &[String],
        from: i64,
        to: i64,
    ) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (a, t) = (account_id.to_owned(), types.to_vec());
                blocking(s, move |s| s.count_events(&a, &t, from, to)).await
            }
            Store::Postgres(p) => p.count_events(account_id, types, from, to).await,
        }
    }

    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.pending_deliveries()).await,
            Store::Postgres(p) => p.pending_deliveries().await,
        }
    }

    pub async fn delete_old_events(
        &self,
        account_id: &str,
        before: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let a = account_id.to_owned();
                blocking(s, move |s| s.delete_old_events(&a, before)).await
            }
            Store::Postgres(p) => p.delete_old_events(account_id, before).await,
        }
    }

    pub async fn delete_finished_instances(&self, before: i64) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.delete_finished_instances(before)).await,
            Store::Postgres(p) => p.delete_finished_instances(before).await,
        }
    }

    pub async fn delete_old_deliveries(&self, before: i64) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, move |s| s.delete_old_deliveries(before)).await,
            Store::Postgres(p) => p.delete_old_deliveries(before).await,
        }
    }

    pub async fn deleted_accounts(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(s) => blocking(s, |s| s.deleted_accounts()).await,
            Store::Postgres(p) => p.deleted_accounts().await,
        }
    }

    pub async fn purge_account_batch(&self, account_id: &str) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let a = account_id.to_owned();
                blocking(s, move |s| s.purge_account_batch(&a)).await
            }
            Store::Postgres(p) => p.purge_account_batch(account_id).await,
        }
    }

    pub async fn delete_old_samples(
        &self,
        cutoffs: &HashMap<String, i64>,
        keep_from: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let cutoffs = cutoffs.clone();
                blocking(s, move |s| s.delete_old_samples(&cutoffs, keep_from)).await
            }
            Store::Postgres(p) => p.delete_old_samples(cutoffs, keep_from).await,
        }
    }
}
