//! An in-memory view of the accounts table: plan, add-on and settings of every live account.
//! The aggregation thread reads settings from it for every sample, handlers read it for every
//! request. Writes through the API update it before answering; a refresh every second picks
//! up changes made by `qss admin` on the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use qss_domain::Settings;
use qss_store::{AccountRecord, Store, StoreError};

#[derive(Debug, Default)]
pub struct Accounts {
    map: RwLock<HashMap<String, Arc<AccountRecord>>>,
}

impl Accounts {
    pub fn get(&self, account_id: &str) -> Option<Arc<AccountRecord>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account_id)
            .cloned()
    }

    /// The cached account, or, when it is not cached, the database's (then cached): an
    /// account created on another node is known here at once, not at the next reload.
    pub async fn fetch(
        &self,
        store: &Store,
        account_id: &str,
    ) -> Result<Option<Arc<AccountRecord>>, StoreError> {
        if let Some(a) = self.get(account_id) {
            return Ok(Some(a));
        }
        Ok(store.get_account(account_id).await?.map(|a| {
            self.put(a);
            self.get(account_id).expect("just cached")
        }))
    }

    pub fn settings(&self, account_id: &str) -> Option<Arc<Settings>> {
        self.get(account_id).map(|a| Arc::new(a.settings.clone()))
    }

    pub fn put(&self, account: AccountRecord) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.account_id.clone(), Arc::new(account));
    }

    pub fn remove(&self, account_id: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account_id);
    }

    /// Replaces the whole view with what the database holds.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let all = store.all_accounts().await?;
        let fresh: HashMap<_, _> = all
            .into_iter()
            .map(|a| (a.account_id.clone(), Arc::new(a)))
            .collect();
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}
