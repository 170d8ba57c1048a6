//! The store's one error type.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database is locked by another qss process: {0}")]
    Locked(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Another node took a partition's lease: nothing was written for it.
    #[error("an aggregation partition's lease was lost to another node")]
    LeaseLost,
    /// No connection could be had (pool timed out or closed, server down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl StoreError {
    /// Errors that mean the database cannot be reached or written right now (503), as opposed
    /// to bugs or corruption (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
            ),
            StoreError::Io(_) | StoreError::Unavailable(_) => true,
            // No SQLSTATE: the connection itself failed (refused, closed, timed out). Class
            // 08 is a connection exception, 57P a server shutting down or starting up
            // (`57P01` admin shutdown, `57P03` cannot connect now), 53 out of resources.
            StoreError::Postgres(e) => {
                e.is_closed()
                    || e.code().is_none_or(|c| {
                        let c = c.code();
                        c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
                    })
            }
            _ => false,
        }
    }
}
