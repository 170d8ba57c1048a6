//! The PostgreSQL backend against a real, throwaway PostgreSQL (qss-pgtest): skipped, saying
//! so, where PostgreSQL is not installed; always run in CI.

use qss_pgtest::PgCluster;
use qss_store::StoreError;
use qss_store::postgres::{LATEST_VERSION, migrate};
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[tokio::test]
async fn three_nodes_migrating_at_once_apply_each_step_exactly_once() {
    let Some(pg) = PgCluster::start("three_nodes_migrating_at_once_apply_each_step_exactly_once")
    else {
        return;
    };
    let url = pg.create_database();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(connect(&url).await.expect("connects"));
    }
    let runs = nodes.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let applied = migrate(&mut c).await;
            (applied, c)
        })
    });
    let mut applied_total = 0;
    let mut clients = Vec::new();
    for run in runs {
        let (applied, c) = run.await.expect("the task ran");
        applied_total += applied.expect("every node's migration succeeds");
        clients.push(c);
    }
    assert_eq!(
        applied_total, LATEST_VERSION as usize,
        "each step applied once in all"
    );

    let c = &clients[0];
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=LATEST_VERSION).collect::<Vec<_>>());
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in [
        "accounts",
        "attempts",
        "credentials",
        "deliveries",
        "events",
        "ingest_keys",
        "instances",
        "meta",
        "samples",
        "tokens",
        "webhooks",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }

    // A later start finds nothing to do.
    let mut again = connect(&url).await.unwrap();
    assert_eq!(migrate(&mut again).await.unwrap(), 0);
}

#[tokio::test]
async fn a_stopped_database_is_unavailable_and_comes_back_with_its_data() {
    let Some(pg) =
        PgCluster::start("a_stopped_database_is_unavailable_and_comes_back_with_its_data")
    else {
        return;
    };
    let url = pg.create_database();
    let mut c = connect(&url).await.unwrap();
    migrate(&mut c).await.unwrap();
    drop(c);

    pg.stop();
    let down = connect(&url).await.expect_err("nothing listens");
    let e = StoreError::from(down);
    assert!(e.is_unavailable(), "{e}: should map to 503, not 500");

    pg.restart();
    let mut c = connect(&url).await.expect("connects after the restart");
    assert_eq!(migrate(&mut c).await.unwrap(), 0, "the schema survived");

    // A query error with a SQLSTATE is a bug or bad data, not unavailability.
    let bad = c.execute("SELECT * FROM no_such_table", &[]).await;
    let e = StoreError::from(bad.expect_err("no such table"));
    assert!(!e.is_unavailable(), "{e}");
}
