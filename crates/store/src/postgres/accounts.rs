//! Accounts, credentials, ingest keys, access tokens and the `meta` table, as in
//! `sqlite/accounts.rs` (same operations, same answers).

use qss_domain::{Plan, Settings};
use tokio_postgres::Row;

use super::PgStore;
use crate::columns::ACCOUNT_COLUMNS;
use crate::{AccountRecord, IngestKeyRecord, NewAccount, Principal, StoreError, hashes_equal};

fn account_from_row(r: &Row) -> Result<AccountRecord, StoreError> {
    let account_id: String = r.try_get(0)?;
    let plan: String = r.try_get(2)?;
    let settings: String = r.try_get(5)?;
    let settings: Settings = serde_json::from_str(&settings)
        .map_err(|e| StoreError::Corrupt(format!("settings of {account_id}: {e}")))?;
    Ok(AccountRecord {
        account_id,
        name: r.try_get(1)?,
        plan: Plan::parse(&plan).unwrap_or(Plan::Pro),
        qss_addon: r.try_get(3)?,
        created_at: r.try_get(4)?,
        settings,
    })
}

impl PgStore {
    pub async fn create_account(&self, new: &NewAccount<'_>) -> Result<(), StoreError> {
        let a = new.account;
        let settings = serde_json::to_string(&a.settings).expect("settings serialize");
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO accounts (account_id, name, plan, qss_addon, created_at, settings)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &a.account_id,
                &a.name,
                &a.plan.as_str(),
                &a.qss_addon,
                &a.created_at,
                &settings,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO credentials (account_id, client_id, secret_hash, scopes, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &a.account_id,
                &new.client_id,
                &new.client_secret_hash,
                &new.scopes,
                &a.created_at,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO ingest_keys (account_id, key_id, secret_hash, created_at)
             VALUES ($1, $2, $3, $4)",
            &[
                &a.account_id,
                &new.key_id,
                &new.key_secret_hash,
                &a.created_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A live (not deleted) account.
    pub async fn get_account(&self, account_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1 AND deleted_at IS NULL"
            ))
            .await?;
        c.query_opt(&st, &[&account_id])
            .await?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    /// Live accounts ordered by id, after `after`, at most `limit`.
    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts
                 WHERE deleted_at IS NULL AND account_id > $1 ORDER BY account_id LIMIT $2"
            ))
            .await?;
        c.query(&st, &[&after.unwrap_or(""), &(limit as i64)])
            .await?
            .iter()
            .map(account_from_row)
            .collect()
    }

    /// Every live account (the aggregator's settings cache).
    pub async fn all_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let mut out: Vec<AccountRecord> = Vec::new();
        loop {
            let after = out.last().map(|a| a.account_id.clone());
            let page = self.list_accounts(after.as_deref(), 1000).await?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Replaces name, plan, add-on flag and settings. Returns false if the account is gone.
    pub async fn update_account(&self, a: &AccountRecord) -> Result<bool, StoreError> {
        let settings = serde_json::to_string(&a.settings).expect("settings serialize");
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE accounts SET name = $2, plan = $3, qss_addon = $4, settings = $5
                 WHERE account_id = $1 AND deleted_at IS NULL",
                &[
                    &a.account_id,
                    &a.name,
                    &a.plan.as_str(),
                    &a.qss_addon,
                    &settings,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks the account deleted, revokes its credentials, keys and tokens, disables its
    /// webhooks and cancels their pending deliveries, at once. Returns false if it did not
    /// exist.
    pub async fn delete_account(&self, account_id: &str, now: i64) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE accounts SET deleted_at = $2 WHERE account_id = $1 AND deleted_at IS NULL",
                &[&account_id, &now],
            )
            .await?;
        tx.execute(
            "UPDATE credentials SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL",
            &[&account_id, &now],
        )
        .await?;
        tx.execute(
            "UPDATE ingest_keys SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL",
            &[&account_id, &now],
        )
        .await?;
        tx.execute("DELETE FROM tokens WHERE account_id = $1", &[&account_id])
            .await?;
        tx.execute(
            "UPDATE webhooks SET status = 'disabled' WHERE account_id = $1",
            &[&account_id],
        )
        .await?;
        tx.execute(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL
             WHERE account_id = $1 AND status = 'pending'",
            &[&account_id],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn create_credentials(
        &self,
        account_id: &str,
        client_id: &str,
        secret_hash: &[u8],
        scopes: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO credentials (account_id, client_id, secret_hash, scopes, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&account_id, &client_id, &secret_hash, &scopes, &now],
        )
        .await?;
        Ok(())
    }

    /// Revokes credentials and every token issued with them. Returns false if none matched.
    pub async fn revoke_credentials(
        &self,
        account_id: &str,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE credentials SET revoked_at = $3
                 WHERE account_id = $1 AND client_id = $2 AND revoked_at IS NULL",
                &[&account_id, &client_id, &now],
            )
            .await?;
        tx.execute(
            "DELETE FROM tokens WHERE account_id = $1 AND client_id = $2",
            &[&account_id, &client_id],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Checks a client id and secret for an account: its scopes if they match and are live.
    /// The comparison of the stored hash is constant-time.
    pub async fn verify_client(
        &self,
        account_id: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT cr.secret_hash, cr.scopes FROM credentials cr
                 JOIN accounts a ON a.account_id = cr.account_id
                 WHERE cr.account_id = $1 AND cr.client_id = $2 AND cr.revoked_at IS NULL
                   AND a.deleted_at IS NULL",
            )
            .await?;
        let Some(row) = c.query_opt(&st, &[&account_id, &client_id]).await? else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.try_get(0)?;
        let scopes: String = row.try_get(1)?;
        Ok(hashes_equal(&stored, secret_hash).then_some(scopes))
    }

    pub async fn insert_token(
        &self,
        token_hash: &[u8],
        account_id: &str,
        client_id: &str,
        scopes: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO tokens (token_hash, account_id, client_id, scopes, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        c.execute(
            &st,
            &[&token_hash, &account_id, &client_id, &scopes, &expires_at],
        )
        .await?;
        Ok(())
    }

    /// The principal of an access token, if the token, its credentials (unless the operator
    /// issued it: [`crate::OPERATOR_CLIENT_ID`]) and its account are live. Expiry is left to
    /// the caller, which answers differently for expired tokens.
    pub async fn lookup_token(&self, token_hash: &[u8]) -> Result<Option<Principal>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT t.account_id, t.scopes, t.expires_at FROM tokens t
                 JOIN accounts a ON a.account_id = t.account_id
                 WHERE t.token_hash = $1 AND a.deleted_at IS NULL
                   AND (t.client_id = $2 OR EXISTS (
                     SELECT 1 FROM credentials cr
                     WHERE cr.account_id = t.account_id AND cr.client_id = t.client_id
                       AND cr.revoked_at IS NULL))",
            )
            .await?;
        let Some(row) = c
            .query_opt(&st, &[&token_hash, &crate::OPERATOR_CLIENT_ID])
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Principal {
            account_id: row.try_get(0)?,
            scopes: row.try_get(1)?,
            expires_at: Some(row.try_get(2)?),
        }))
    }

    /// Deletes tokens that expired before `before`.
    pub async fn purge_expired_tokens(&self, before: i64) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM tokens WHERE expires_at < $1", &[&before])
            .await?;
        Ok(n as usize)
    }

    pub async fn create_ingest_key(
        &self,
        account_id: &str,
        key_id: &str,
        secret_hash: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO ingest_keys (account_id, key_id, secret_hash, created_at)
             VALUES ($1, $2, $3, $4)",
            &[&account_id, &key_id, &secret_hash, &now],
        )
        .await?;
        Ok(())
    }

    pub async fn list_ingest_keys(
        &self,
        account_id: &str,
    ) -> Result<Vec<IngestKeyRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT key_id, created_at, last_used_at FROM ingest_keys
                 WHERE account_id = $1 AND revoked_at IS NULL
                 ORDER BY created_at, key_id",
                &[&account_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IngestKeyRecord {
                    key_id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    last_used_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    pub async fn revoke_ingest_key(
        &self,
        account_id: &str,
        key_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE ingest_keys SET revoked_at = $3
                 WHERE account_id = $1 AND key_id = $2 AND revoked_at IS NULL",
                &[&account_id, &key_id, &now],
            )
            .await?;
        Ok(n == 1)
    }

    /// The principal of an ingest key (scope `qss:ingest` only), if its secret matches.
    pub async fn lookup_ingest_key(
        &self,
        key_id: &str,
        secret_hash: &[u8],
    ) -> Result<Option<Principal>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT k.account_id, k.secret_hash FROM ingest_keys k
                 JOIN accounts a ON a.account_id = k.account_id
                 WHERE k.key_id = $1 AND k.revoked_at IS NULL AND a.deleted_at IS NULL",
            )
            .await?;
        let Some(row) = c.query_opt(&st, &[&key_id]).await? else {
            return Ok(None);
        };
        let account_id: String = row.try_get(0)?;
        let stored: Vec<u8> = row.try_get(1)?;
        Ok(hashes_equal(&stored, secret_hash).then_some(Principal {
            account_id,
            scopes: "qss:ingest".to_string(),
            expires_at: None,
        }))
    }

    /// Records that ingest keys were used (coarse: the caller batches these).
    pub async fn touch_ingest_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        for (key_id, at) in used {
            tx.execute(
                "UPDATE ingest_keys SET last_used_at = $2 WHERE key_id = $1",
                &[key_id, at],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Sets `key` to `value` unless it is already set; returns the value in force (the same on
    /// every node, whichever set it first).
    pub async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .await?;
        let row = c
            .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await?;
        Ok(())
    }
}
