//! Accounts, credentials, ingest keys, access tokens and the `meta` key-value table.

use qss_domain::{Plan, Settings};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::columns::ACCOUNT_COLUMNS;
use crate::{AccountRecord, IngestKeyRecord, Principal, StoreError, hashes_equal};

/// A new account with its first credentials and ingest key, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub account: &'a AccountRecord,
    pub client_id: &'a str,
    pub client_secret_hash: &'a [u8],
    pub scopes: &'a str,
    pub key_id: &'a str,
    pub key_secret_hash: &'a [u8],
}

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<(AccountRecord, String)> {
    let plan: String = r.get(2)?;
    let settings: String = r.get(5)?;
    Ok((
        AccountRecord {
            account_id: r.get(0)?,
            name: r.get(1)?,
            plan: Plan::parse(&plan).unwrap_or(Plan::Pro),
            qss_addon: r.get(3)?,
            created_at: r.get(4)?,
            settings: Settings::default(),
        },
        settings,
    ))
}

fn finish_account((mut a, settings): (AccountRecord, String)) -> Result<AccountRecord, StoreError> {
    a.settings = serde_json::from_str(&settings)
        .map_err(|e| StoreError::Corrupt(format!("settings of {}: {e}", a.account_id)))?;
    Ok(a)
}

impl SqliteStore {
    pub fn create_account(&self, new: &NewAccount<'_>) -> Result<(), StoreError> {
        let a = new.account;
        let settings = serde_json::to_string(&a.settings).expect("settings serialize");
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO accounts (account_id, name, plan, qss_addon, created_at, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.account_id,
                    a.name,
                    a.plan.as_str(),
                    a.qss_addon,
                    a.created_at,
                    settings
                ],
            )?;
            tx.execute(
                "INSERT INTO credentials (account_id, client_id, secret_hash, scopes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    a.account_id,
                    new.client_id,
                    new.client_secret_hash,
                    new.scopes,
                    a.created_at
                ],
            )?;
            tx.execute(
                "INSERT INTO ingest_keys (account_id, key_id, secret_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![a.account_id, new.key_id, new.key_secret_hash, a.created_at],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// A live (not deleted) account.
    pub fn get_account(&self, account_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        let row = self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?1 AND deleted_at IS NULL"
            ))?
            .query_row([account_id], account_from_row)
            .optional()?)
        })?;
        row.map(finish_account).transpose()
    }

    /// Live accounts ordered by id, after `after`, at most `limit`.
    pub fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts
                 WHERE deleted_at IS NULL AND account_id > ?1 ORDER BY account_id LIMIT ?2"
            ))?;
            let rows = st
                .query_map(params![after.unwrap_or(""), limit as i64], account_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        rows.into_iter().map(finish_account).collect()
    }

    /// Every live account (the aggregator's settings cache).
    pub fn all_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = self.list_accounts(
                out.last().map(|a: &AccountRecord| a.account_id.as_str()),
                1000,
            )?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Replaces name, plan, add-on flag and settings. Returns false if the account is gone.
    pub fn update_account(&self, a: &AccountRecord) -> Result<bool, StoreError> {
        let settings = serde_json::to_string(&a.settings).expect("settings serialize");
        self.write(|c| {
            let n = c.execute(
                "UPDATE accounts SET name = ?2, plan = ?3, qss_addon = ?4, settings = ?5
                 WHERE account_id = ?1 AND deleted_at IS NULL",
                params![a.account_id, a.name, a.plan.as_str(), a.qss_addon, settings],
            )?;
            Ok(n == 1)
        })
    }

    /// Marks the account deleted, revokes its credentials, keys and tokens, disables its
    /// webhooks and cancels their pending deliveries, at once; its data is purged later, in
    /// small batches. Returns false if it did not exist.
    pub fn delete_account(&self, account_id: &str, now: i64) -> Result<bool, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE accounts SET deleted_at = ?2 WHERE account_id = ?1 AND deleted_at IS NULL",
                params![account_id, now],
            )?;
            tx.execute(
                "UPDATE credentials SET revoked_at = ?2 WHERE account_id = ?1 AND revoked_at IS NULL",
                params![account_id, now],
            )?;
            tx.execute(
                "UPDATE ingest_keys SET revoked_at = ?2 WHERE account_id = ?1 AND revoked_at IS NULL",
                params![account_id, now],
            )?;
            tx.execute("DELETE FROM tokens WHERE account_id = ?1", [account_id])?;
            tx.execute("UPDATE webhooks SET status = 'disabled' WHERE account_id = ?1", [account_id])?;
            tx.execute(
                "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL
                 WHERE account_id = ?1 AND status = 'pending'",
                [account_id],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    pub fn create_credentials(
        &self,
        account_id: &str,
        client_id: &str,
        secret_hash: &[u8],
        scopes: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO credentials (account_id, client_id, secret_hash, scopes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![account_id, client_id, secret_hash, scopes, now],
            )?;
            Ok(())
        })
    }

    /// Revokes credentials and every token issued with them. Returns false if none matched.
    pub fn revoke_credentials(
        &self,
        account_id: &str,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE credentials SET revoked_at = ?3
                 WHERE account_id = ?1 AND client_id = ?2 AND revoked_at IS NULL",
                params![account_id, client_id, now],
            )?;
            tx.execute(
                "DELETE FROM tokens WHERE account_id = ?1 AND client_id = ?2",
                params![account_id, client_id],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Checks a client id and secret for an account: its scopes if they match and are live.
    /// The comparison of the stored hash is constant-time.
    pub fn verify_client(
        &self,
        account_id: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(Vec<u8>, String)> = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT cr.secret_hash, cr.scopes FROM credentials cr
                 JOIN accounts a ON a.account_id = cr.account_id
                 WHERE cr.account_id = ?1 AND cr.client_id = ?2 AND cr.revoked_at IS NULL
                   AND a.deleted_at IS NULL",
            )?
            .query_row(params![account_id, client_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
        })?;
        Ok(row.and_then(|(stored, scopes)| hashes_equal(&stored, secret_hash).then_some(scopes)))
    }

    pub fn insert_token(
        &self,
        token_hash: &[u8],
        account_id: &str,
        client_id: &str,
        scopes: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO tokens (token_hash, account_id, client_id, scopes, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                token_hash, account_id, client_id, scopes, expires_at
            ])?;
            Ok(())
        })
    }

    /// The principal of an access token, if the token, its credentials (unless the operator
    /// issued it: [`crate::OPERATOR_CLIENT_ID`]) and its account are live. Expiry is left to
    /// the caller, which answers differently for expired tokens.
    pub fn lookup_token(&self, token_hash: &[u8]) -> Result<Option<Principal>, StoreError> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT t.account_id, t.scopes, t.expires_at FROM tokens t
                 JOIN accounts a ON a.account_id = t.account_id
                 WHERE t.token_hash = ?1 AND a.deleted_at IS NULL
                   AND (t.client_id = ?2 OR EXISTS (
                     SELECT 1 FROM credentials cr
                     WHERE cr.account_id = t.account_id AND cr.client_id = t.client_id
                       AND cr.revoked_at IS NULL))",
            )?
            .query_row(params![token_hash, crate::OPERATOR_CLIENT_ID], |r| {
                Ok(Principal {
                    account_id: r.get(0)?,
                    scopes: r.get(1)?,
                    expires_at: Some(r.get(2)?),
                })
            })
            .optional()?)
        })
    }

    /// Deletes tokens that expired before `before`.
    pub fn purge_expired_tokens(&self, before: i64) -> Result<usize, StoreError> {
        self.write(|c| Ok(c.execute("DELETE FROM tokens WHERE expires_at < ?1", [before])?))
    }

    pub fn create_ingest_key(
        &self,
        account_id: &str,
        key_id: &str,
        secret_hash: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO ingest_keys (account_id, key_id, secret_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![account_id, key_id, secret_hash, now],
            )?;
            Ok(())
        })
    }

    pub fn list_ingest_keys(&self, account_id: &str) -> Result<Vec<IngestKeyRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT key_id, created_at, last_used_at FROM ingest_keys
                 WHERE account_id = ?1 AND revoked_at IS NULL ORDER BY created_at, key_id",
            )?;
            let rows = st
                .query_map([account_id], |r| {
                    Ok(IngestKeyRecord {
                        key_id: r.get(0)?,
                        created_at: r.get(1)?,
                        last_used_at: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn revoke_ingest_key(
        &self,
        account_id: &str,
        key_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE ingest_keys SET revoked_at = ?3
                 WHERE account_id = ?1 AND key_id = ?2 AND revoked_at IS NULL",
                params![account_id, key_id, now],
            )?;
            Ok(n == 1)
        })
    }

    /// The principal of an ingest key (scope `qss:ingest` only), if its secret matches.
    pub fn lookup_ingest_key(
        &self,
        key_id: &str,
        secret_hash: &[u8],
    ) -> Result<Option<Principal>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT k.account_id, k.secret_hash FROM ingest_keys k
                 JOIN accounts a ON a.account_id = k.account_id
                 WHERE k.key_id = ?1 AND k.revoked_at IS NULL AND a.deleted_at IS NULL",
            )?
            .query_row([key_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })?;
        Ok(row.and_then(|(account_id, stored)| {
            hashes_equal(&stored, secret_hash).then_some(Principal {
                account_id,
                scopes: "qss:ingest".to_string(),
                expires_at: None,
            })
        }))
    }

    /// Records that ingest keys were used (coarse: the caller batches these).
    pub fn touch_ingest_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            for (key_id, at) in used {
                tx.execute(
                    "UPDATE ingest_keys SET last_used_at = ?2 WHERE key_id = ?1",
                    params![key_id, at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Sets `key` to `value` unless it is already set; returns the value in force.
    pub fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )?;
            Ok(c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }
}
