//! What only the SQLite backend does: one serving process per file. Everything else the store
//! does is in the conformance suite (`conformance.rs`), run on both backends.

use qss_store::SqliteStore;

#[test]
fn a_second_server_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let _first = SqliteStore::open_exclusive(&path).unwrap();
    let err = SqliteStore::open_exclusive(&path).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    // `qss admin` may still open it.
    SqliteStore::open_shared(&path).unwrap();
}
