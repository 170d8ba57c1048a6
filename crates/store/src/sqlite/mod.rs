//! The SQLite backend: one file in WAL mode with durable commits (`synchronous = FULL`).
//!
//! Layout choices follow the ceilings measured on these machines (LESSONS.md): raw samples are
//! appended in arrival order to a table with no secondary index (about 800k rows/s instead of
//! 30k with a per-series index); per-series state lives in the aggregator's memory and is
//! rebuilt from this log on start. Events, far fewer, carry the indexes the API reads by.
//!
//! One connection writes (behind a mutex, shared by the aggregation thread and admin writes);
//! a small pool of connections reads, so API reads never wait behind a group commit.

mod accounts;
pub use accounts::NewAccount;
pub use ingest::WriteBatch;
mod events;
mod ingest;
mod retention;
mod schema;
mod webhooks;
pub use webhooks::MAX_WEBHOOKS;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

const READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Held for the life of a serving process: a second server on the same file refuses to
    /// start. `qss admin` opens the database without it.
    _lock: Option<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database for a serving process, taking the exclusive
    /// process lock beside it.
    pub fn open_exclusive(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let lock_path = lock_path(path);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked(format!(
                "{} is in use by another qss server (lock file {})",
                path.display(),
                lock_path.display()
            )));
        }
        Self::open_inner(path, Some(lock))
    }

    /// Opens the database without the process lock, for `qss admin`, which may run beside a
    /// server.
    pub fn open_shared(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Self::open_inner(path, None)
    }

    fn open_inner(path: &Path, lock: Option<File>) -> Result<Self, StoreError> {
        let writer = Connection::open(path)?;
        configure(&writer)?;
        schema::migrate(&writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(c);
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(readers),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer connection.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Runs `f` on a reader connection (a new one if the pool is empty).
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    /// True when the database answers a trivial query (`/readyz`).
    pub fn ping(&self) -> bool {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .is_ok()
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn configure(c: &Connection) -> Result<(), StoreError> {
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns, which is what a 202 promises.
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "OFF")?;
    c.pragma_update(None, "wal_autocheckpoint", 4000)?;
    Ok(())
}
