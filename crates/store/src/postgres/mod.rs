//! The PostgreSQL backend (SPEC 10): several stateless qss nodes on one database
//! (docs/postgres-design.md). The schema and its migrations, which every node applies at
//! start, a connection pool, every operation of `SqliteStore` with the same behaviour (the
//! conformance suite checks both), and what nodes coordinate through (`cluster`).

mod accounts;
mod cluster;
mod events;
mod ingest;
mod retention;
mod schema;
mod webhooks;

pub use cluster::{
    ACCOUNTS_CHANNEL, Lease, NewSample, PartSample, SAMPLES_CHANNEL, WEBHOOKS_CHANNEL,
};
pub use ingest::DELIVERIES_CHANNEL;
pub use schema::{LATEST_VERSION, migrate};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::StoreError;

/// A pool of connections to one PostgreSQL database, migrated to the latest schema.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects (at most `max_connections` at once) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: usize) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = PgStore { pool };
        let mut c = store.client().await?;
        migrate(&mut c).await?;
        Ok(store)
    }

    /// True when the database answers a trivial query (`/readyz`).
    pub async fn ping(&self) -> bool {
        match self.client().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}
