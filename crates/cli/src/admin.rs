//! `qss admin`: the operator API's operations, offline on the database (SPEC 3.3).

use clap::Subcommand;
use qss_api::admin::{
    AccountIn, AccountOut, create_account_in, create_credentials_in, create_ingest_key_in,
    parse_scopes,
};
use qss_domain::Plan;
use std::sync::Arc;

use qss_server::Backend;
use qss_store::{PgStore, SqliteStore, Store};
use serde_json::json;

use crate::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an account (prints its credentials and ingest key once).
    CreateAccount {
        #[arg(long)]
        name: String,
        /// pro, business or enterprise.
        #[arg(long, default_value = "business")]
        plan: String,
        /// Enable the QSS add-on.
        #[arg(long)]
        qss_addon: bool,
    },
    /// List accounts.
    ListAccounts,
    /// Show one account.
    GetAccount { account_id: String },
    /// Change an account's name, plan or add-on.
    UpdateAccount {
        account_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        qss_addon: Option<bool>,
    },
    /// Delete an account: its credentials are refused at once.
    DeleteAccount { account_id: String },
    /// Create credentials (default scopes: qss:read qss:write).
    CreateCredentials {
        account_id: String,
        /// Comma-separated scopes.
        #[arg(long)]
        scopes: Option<String>,
    },
    /// Revoke credentials and their tokens.
    RevokeCredentials {
        account_id: String,
        client_id: String,
    },
    /// Create an ingest key.
    CreateIngestKey { account_id: String },
    /// List ingest keys.
    ListIngestKeys { account_id: String },
    /// Revoke an ingest key.
    RevokeIngestKey { account_id: String, key_id: String },
}

fn now_ms() -> i64 {
    qss_api::Clock::now_ms(&qss_api::SystemClock)
}

fn print(v: impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn plan(s: &str) -> anyhow::Result<Plan> {
    Plan::parse(s)
        .ok_or_else(|| anyhow::anyhow!("plan must be pro, business or enterprise, not {s:?}"))
}

pub fn run(args: &ConfigArgs, command: AdminCommand) -> anyhow::Result<()> {
    let config = args.load()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = match config.backend()? {
            Backend::Sqlite(path) => Store::Sqlite(Arc::new(SqliteStore::open_shared(&path)?)),
            Backend::Postgres(url) => Store::Postgres(PgStore::connect(&url, 2).await?),
        };
        execute(&store, command).await
    })
}

async fn execute(store: &Store, command: AdminCommand) -> anyhow::Result<()> {
    let shared = store;
    let now = now_ms();
    let missing = |id: &str| anyhow::anyhow!("account {id} does not exist");
    match command {
        AdminCommand::CreateAccount {
            name,
            plan: p,
            qss_addon,
        } => {
            let input = AccountIn {
                name,
                plan: plan(&p)?,
                qss_addon,
            };
            print(create_account_in(shared, &input, now).await?)
        }
        AdminCommand::ListAccounts => {
            let all = store.all_accounts().await?;
            print(all.iter().map(AccountOut::from).collect::<Vec<_>>())
        }
        AdminCommand::GetAccount { account_id } => {
            let a = store
                .get_account(&account_id)
                .await?
                .ok_or_else(|| missing(&account_id))?;
            print(AccountOut::from(&a))
        }
        AdminCommand::UpdateAccount {
            account_id,
            name,
            plan: p,
            qss_addon,
        } => {
            let mut a = store
                .get_account(&account_id)
                .await?
                .ok_or_else(|| missing(&account_id))?;
            if let Some(n) = name {
                anyhow::ensure!(
                    (1..=128).contains(&n.chars().count()),
                    "name must be 1 to 128 characters"
                );
                a.name = n;
            }
            if let Some(p) = p {
                a.plan = plan(&p)?;
            }
            if let Some(b) = qss_addon {
                a.qss_addon = b;
            }
            store.update_account(&a).await?;
            print(AccountOut::from(&a))
        }
        AdminCommand::DeleteAccount { account_id } => {
            anyhow::ensure!(
                store.delete_account(&account_id, now).await?,
                "account {account_id} does not exist"
            );
            print(json!({"deleted": account_id}))
        }
        AdminCommand::CreateCredentials { account_id, scopes } => {
            store
                .get_account(&account_id)
                .await?
                .ok_or_else(|| missing(&account_id))?;
            let list = scopes.map(|s| json!(s.split(',').map(str::trim).collect::<Vec<_>>()));
            let scopes = parse_scopes(list.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            print(create_credentials_in(shared, &account_id, &scopes, now).await?)
        }
        AdminCommand::RevokeCredentials {
            account_id,
            client_id,
        } => {
            anyhow::ensure!(
                store
                    .revoke_credentials(&account_id, &client_id, now)
                    .await?,
                "no such credentials"
            );
            print(json!({"revoked": client_id}))
        }
        AdminCommand::CreateIngestKey { account_id } => {
            store
                .get_account(&account_id)
                .await?
                .ok_or_else(|| missing(&account_id))?;
            print(create_ingest_key_in(shared, &account_id, now).await?)
        }
        AdminCommand::ListIngestKeys { account_id } => {
            let keys = store.list_ingest_keys(&account_id).await?;
            print(
                keys.iter()
                    .map(|k| json!({"key_id": k.key_id, "created_at": qss_domain::timefmt::format_ms(k.created_at)}))
                    .collect::<Vec<_>>(),
            )
        }
        AdminCommand::RevokeIngestKey { account_id, key_id } => {
            anyhow::ensure!(
                store.revoke_ingest_key(&account_id, &key_id, now).await?,
                "no such ingest key"
            );
            print(json!({"revoked": key_id}))
        }
    }
}
