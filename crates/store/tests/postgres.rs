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

/// Page snapshots rely on `seq` being commit order: once a reader has seen `max(seq) = S`, no
/// event with `seq <= S` may appear later. Eight writers commit concurrently while a reader
/// takes snapshots; afterwards every snapshot must still hold exactly what it held then.
#[tokio::test]
async fn event_seq_is_commit_order_under_concurrent_commits() {
    use qss_store::{EventQuery, NewEvent, PgStore, WriteBatch};
    let Some(pg) = PgCluster::start("event_seq_is_commit_order_under_concurrent_commits") else {
        return;
    };
    let store = PgStore::connect(&pg.create_database(), 16).await.unwrap();
    let count_upto = |store: PgStore, s: i64| async move {
        let q = EventQuery {
            account_id: "a".into(),
            from: 0,
            to: i64::MAX,
            max_seq: Some(s),
            limit: 1_000_000,
            ..Default::default()
        };
        store.list_events(&q).await.unwrap().len()
    };
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in 0..25 {
                    let events = (0..4)
                        .map(|i| {
                            let key = format!("w{w}-b{b}-e{i}");
                            NewEvent {
                                id: key.clone(),
                                account_id: "a".into(),
                                event_type: "qss.phone_call_qos".into(),
                                event_ts: 1_000,
                                meeting_id: None,
                                meeting_instance_id: None,
                                participant_id: None,
                                call_id: None,
                                dedup_key: key,
                                body: "{}".into(),
                            }
                        })
                        .collect();
                    let batch = WriteBatch {
                        events,
                        ..Default::default()
                    };
                    store.commit(&batch).await.unwrap();
                }
            })
        })
        .collect();
    let mut snapshots = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        let s = store.max_event_seq().await.unwrap();
        snapshots.push((s, count_upto(store.clone(), s).await));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(snapshots.len() > 5, "the reader ran alongside the writers");
    for (s, seen) in snapshots {
        assert_eq!(
            count_upto(store.clone(), s).await,
            seen,
            "an event with seq <= {s} became visible after a snapshot at {s}"
        );
    }
    assert_eq!(count_upto(store.clone(), i64::MAX).await, 8 * 25 * 4);
}

/// The shared sample log is read by position (`seq > cursor`), so it too must be in commit
/// order: once a reader has seen `last_sample_seq() = S`, no sample with `seq <= S` may appear
/// later. Eight writers append concurrently (as eight nodes would) while a reader takes
/// snapshots.
#[tokio::test]
async fn sample_seq_is_commit_order_under_concurrent_appends() {
    use qss_store::{NewSample, PgStore};
    let Some(pg) = PgCluster::start("sample_seq_is_commit_order_under_concurrent_appends") else {
        return;
    };
    let store = PgStore::connect(&pg.create_database(), 16).await.unwrap();
    let count_upto = |store: PgStore, s: i64| async move {
        let parts: Vec<i32> = (0..qss_store::PARTITIONS).collect();
        store
            .part_samples(&parts, 0, s, 1_000_000)
            .await
            .unwrap()
            .len()
    };
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in 0..25 {
                    let samples: Vec<NewSample> = (0..20)
                        .map(|i| NewSample {
                            account_id: "a".into(),
                            part: (w * 7 + i) % qss_store::PARTITIONS,
                            skey: format!("w{w}-b{b}-s{i}"),
                            received_ms: 1_000,
                            ts: 1_000,
                            interval_s: 60,
                            body: "{}".into(),
                        })
                        .collect();
                    let fresh = store.append_samples(&samples).await.unwrap();
                    assert!(fresh.iter().all(|f| *f));
                }
            })
        })
        .collect();
    let mut snapshots = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        let s = store.last_sample_seq().await.unwrap();
        snapshots.push((s, count_upto(store.clone(), s).await));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(snapshots.len() > 5, "the reader ran alongside the writers");
    for (s, seen) in snapshots {
        assert_eq!(
            count_upto(store.clone(), s).await,
            seen,
            "a sample with seq <= {s} became visible after a snapshot at {s}"
        );
    }
    assert_eq!(count_upto(store.clone(), i64::MAX).await, 8 * 25 * 20);
    // A resend is a duplicate, whatever the node.
    let again = NewSample {
        account_id: "a".into(),
        part: 0,
        skey: "w0-b0-s0".into(),
        received_ms: 2_000,
        ts: 1_000,
        interval_s: 60,
        body: "{}".into(),
    };
    assert_eq!(store.append_samples(&[again]).await.unwrap(), vec![false]);
}
