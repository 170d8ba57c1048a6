//! The storage conformance suite (issue 5): the same checks, through `Store`, on a fresh SQLite
//! file and on a fresh PostgreSQL database of a throwaway cluster (skipped, saying so, where
//! PostgreSQL is not installed; always run in CI). So far: the account operations, the
//! aggregation's commit and recovery reads, event pages, webhooks with their deliveries, and
//! retention.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use qss_domain::{Plan, Settings};
use qss_pgtest::PgCluster;
use qss_store::{
    AccountRecord, AttemptRecord, AttemptRow, ClaimedDelivery, EventQuery, InstanceRow,
    InstanceStatus, NewAccount, NewEvent, OPERATOR_CLIENT_ID, PgStore, SampleRow, SqliteStore,
    Store, WebhookRecord, WriteBatch, hash_secret,
};

/// Runs `check` on SQLite, then on PostgreSQL where it is installed.
async fn on_both<F, Fut>(test: &str, check: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open_exclusive(&dir.path().join("qss.db")).unwrap();
    check(Store::Sqlite(Arc::new(sqlite))).await;
    if let Some(pg) = PgCluster::start(test) {
        let url = pg.create_database();
        let store = PgStore::connect(&url, 4).await.unwrap();
        check(Store::Postgres(store)).await;
    }
}

fn account(id: &str, created_at: i64) -> AccountRecord {
    AccountRecord {
        account_id: id.to_string(),
        name: format!("Account {id}"),
        plan: Plan::Business,
        qss_addon: true,
        created_at,
        settings: Settings::default(),
    }
}

async fn create(store: &Store, id: &str, secret: &str, key_secret: &str) {
    let a = account(id, 1_000);
    store
        .create_account(&NewAccount {
            account: &a,
            client_id: &format!("client-{id}"),
            client_secret_hash: &hash_secret(secret),
            scopes: "qss:read qss:write",
            key_id: &format!("key-{id}"),
            key_secret_hash: &hash_secret(key_secret),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn accounts_are_created_paged_in_byte_order_updated_and_deleted() {
    on_both(
        "accounts_are_created_paged_in_byte_order_updated_and_deleted",
        |store| async move {
            // Byte order, whatever the database's locale: "B" < "Z" < "a" < "b".
            for id in ["acct_b", "acct_Z", "acct_a", "acct_B"] {
                create(&store, id, "s", "k").await;
            }
            let first = store.list_accounts(None, 3).await.unwrap();
            let ids: Vec<&str> = first.iter().map(|a| a.account_id.as_str()).collect();
            assert_eq!(ids, ["acct_B", "acct_Z", "acct_a"]);
            let rest = store.list_accounts(Some("acct_a"), 3).await.unwrap();
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].account_id, "acct_b");
            assert_eq!(store.all_accounts().await.unwrap().len(), 4);

            let mut a = store.get_account("acct_a").await.unwrap().expect("stored");
            assert_eq!(a, account("acct_a", 1_000));
            a.name = "Renamed".into();
            a.plan = Plan::Enterprise;
            a.settings.aggregation_interval_seconds = 30;
            assert!(store.update_account(&a).await.unwrap());
            assert_eq!(store.get_account("acct_a").await.unwrap(), Some(a.clone()));

            assert!(store.delete_account("acct_a", 2_000).await.unwrap());
            assert!(
                !store.delete_account("acct_a", 2_001).await.unwrap(),
                "already gone"
            );
            assert_eq!(store.get_account("acct_a").await.unwrap(), None);
            assert!(
                !store.update_account(&a).await.unwrap(),
                "a deleted account stays deleted"
            );
            assert_eq!(store.all_accounts().await.unwrap().len(), 3);
            assert_eq!(store.get_account("nobody").await.unwrap(), None);
        },
    )
    .await;
}

#[tokio::test]
async fn credentials_and_tokens_verify_expire_and_die_with_their_credentials() {
    on_both(
        "credentials_and_tokens_verify_expire_and_die_with_their_credentials",
        |store| async move {
            create(&store, "acct_1", "secret-1", "k").await;
            let right = hash_secret("secret-1");
            assert_eq!(
                store
                    .verify_client("acct_1", "client-acct_1", &right)
                    .await
                    .unwrap(),
                Some("qss:read qss:write".to_string())
            );
            let wrong = hash_secret("secret-2");
            assert_eq!(
                store
                    .verify_client("acct_1", "client-acct_1", &wrong)
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(
                store
                    .verify_client("acct_2", "client-acct_1", &right)
                    .await
                    .unwrap(),
                None
            );

            let (t1, t2) = (hash_secret("token-1"), hash_secret("token-2"));
            store
                .insert_token(&t1, "acct_1", "client-acct_1", "qss:read", 5_000)
                .await
                .unwrap();
            store
                .insert_token(&t2, "acct_1", "client-acct_1", "qss:read", 9_000)
                .await
                .unwrap();
            let p = store.lookup_token(&t1).await.unwrap().expect("live token");
            assert_eq!(p.account_id, "acct_1");
            assert_eq!(p.expires_at, Some(5_000));
            assert!(p.has_scope("qss:read") && !p.has_scope("qss:write"));
            assert_eq!(store.purge_expired_tokens(6_000).await.unwrap(), 1);
            assert_eq!(store.lookup_token(&t1).await.unwrap(), None);

            // Second credentials; revoking the first kills its tokens, not the account.
            let other = hash_secret("secret-3");
            store
                .create_credentials("acct_1", "client-2", &other, "qss:read", 3_000)
                .await
                .unwrap();
            assert!(
                store
                    .revoke_credentials("acct_1", "client-acct_1", 7_000)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .revoke_credentials("acct_1", "client-acct_1", 7_001)
                    .await
                    .unwrap()
            );
            assert_eq!(store.lookup_token(&t2).await.unwrap(), None);
            assert_eq!(
                store
                    .verify_client("acct_1", "client-acct_1", &right)
                    .await
                    .unwrap(),
                None
            );
            assert!(
                store
                    .verify_client("acct_1", "client-2", &other)
                    .await
                    .unwrap()
                    .is_some()
            );

            // A token the operator issued lives without credentials, until revoked by name.
            let op = hash_secret("operator-token");
            store
                .insert_token(&op, "acct_1", OPERATOR_CLIENT_ID, "qss:read", 99_000)
                .await
                .unwrap();
            assert!(store.lookup_token(&op).await.unwrap().is_some());
            assert!(
                !store
                    .revoke_credentials("acct_1", OPERATOR_CLIENT_ID, 7_500)
                    .await
                    .unwrap()
            );
            assert_eq!(store.lookup_token(&op).await.unwrap(), None);
            store
                .insert_token(&op, "acct_1", OPERATOR_CLIENT_ID, "qss:read", 99_000)
                .await
                .unwrap();

            // Deleting the account ends everything.
            store
                .insert_token(&t1, "acct_1", "client-2", "qss:read", 99_000)
                .await
                .unwrap();
            assert!(store.delete_account("acct_1", 8_000).await.unwrap());
            assert_eq!(store.lookup_token(&t1).await.unwrap(), None);
            assert_eq!(store.lookup_token(&op).await.unwrap(), None);
            assert_eq!(
                store
                    .verify_client("acct_1", "client-2", &other)
                    .await
                    .unwrap(),
                None
            );
        },
    )
    .await;
}

#[tokio::test]
async fn ingest_keys_are_listed_matched_touched_and_revoked() {
    on_both(
        "ingest_keys_are_listed_matched_touched_and_revoked",
        |store| async move {
            create(&store, "acct_1", "s", "key-secret-1").await;
            store
                .create_ingest_key("acct_1", "key-2", &hash_secret("key-secret-2"), 2_000)
                .await
                .unwrap();
            let keys = store.list_ingest_keys("acct_1").await.unwrap();
            let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
            assert_eq!(ids, ["key-acct_1", "key-2"], "by creation time");
            assert!(keys.iter().all(|k| k.last_used_at.is_none()));

            let p = store
                .lookup_ingest_key("key-2", &hash_secret("key-secret-2"))
                .await
                .unwrap()
                .expect("matches");
            assert_eq!(
                (p.account_id.as_str(), p.scopes.as_str(), p.expires_at),
                ("acct_1", "qss:ingest", None)
            );
            assert_eq!(
                store
                    .lookup_ingest_key("key-2", &hash_secret("nope"))
                    .await
                    .unwrap(),
                None
            );

            store
                .touch_ingest_keys(&[("key-2".to_string(), 3_000)])
                .await
                .unwrap();
            let keys = store.list_ingest_keys("acct_1").await.unwrap();
            assert_eq!(keys[1].last_used_at, Some(3_000));

            assert!(
                store
                    .revoke_ingest_key("acct_1", "key-2", 4_000)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .revoke_ingest_key("acct_1", "key-2", 4_001)
                    .await
                    .unwrap()
            );
            assert_eq!(
                store
                    .lookup_ingest_key("key-2", &hash_secret("key-secret-2"))
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(store.list_ingest_keys("acct_1").await.unwrap().len(), 1);

            assert!(store.delete_account("acct_1", 5_000).await.unwrap());
            assert_eq!(
                store
                    .lookup_ingest_key("key-acct_1", &hash_secret("key-secret-1"))
                    .await
                    .unwrap(),
                None
            );
        },
    )
    .await;
}

#[tokio::test]
async fn meta_keeps_the_first_value_until_set() {
    on_both("meta_keeps_the_first_value_until_set", |store| async move {
        assert_eq!(store.get_meta("k").await.unwrap(), None);
        assert_eq!(store.init_meta("k", "first").await.unwrap(), "first");
        assert_eq!(store.init_meta("k", "second").await.unwrap(), "first");
        store.set_meta("k", "third").await.unwrap();
        assert_eq!(
            store.get_meta("k").await.unwrap(),
            Some("third".to_string())
        );
    })
    .await;
}

fn event(
    account: &str,
    ts: i64,
    id: &str,
    key: &str,
    kind: &str,
    meeting: Option<&str>,
) -> NewEvent {
    NewEvent {
        id: id.to_string(),
        account_id: account.to_string(),
        event_type: kind.to_string(),
        event_ts: ts,
        meeting_id: meeting.map(str::to_string),
        meeting_instance_id: meeting.map(|m| format!("mi_{m}")),
        participant_id: None,
        call_id: None,
        dedup_key: key.to_string(),
        body: format!(r#"{{"id":"{id}"}}"#),
    }
}

fn query(account: &str) -> EventQuery {
    EventQuery {
        account_id: account.to_string(),
        from: 0,
        to: 1_000_000,
        limit: 100,
        ..Default::default()
    }
}

fn ids(rows: &[qss_store::EventRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn events_are_stored_once_and_paged_in_time_then_byte_order() {
    on_both(
        "events_are_stored_once_and_paged_in_time_then_byte_order",
        |store| async move {
            const P: &str = "qss.meeting_participant_qos";
            const S: &str = "qss.meeting_qos_summary";
            let batch = WriteBatch {
                events: vec![
                    event("a", 2_000, "ev_b", "k2", P, Some("m1")),
                    event("a", 1_000, "ev_x", "k1", P, Some("m1")),
                    event("a", 2_000, "ev_B", "k3", S, Some("m2")),
                    event("a", 1_000, "ev_dup", "k1", P, Some("m1")),
                    event("other", 1_500, "ev_o", "k1", P, Some("m1")),
                ],
                ..Default::default()
            };
            assert_eq!(
                store.commit(batch.clone()).await.unwrap(),
                4,
                "the second k1 of account a is dropped"
            );
            assert_eq!(
                store.commit(batch.clone()).await.unwrap(),
                0,
                "nothing twice"
            );

            let all = store.list_events(&query("a")).await.unwrap();
            assert_eq!(
                ids(&all),
                ["ev_x", "ev_B", "ev_b"],
                "event_ts, then id byte by byte"
            );
            assert_eq!(all[0].body, r#"{"id":"ev_x"}"#);

            // Keyset: strictly after (2000, "ev_B").
            let q = EventQuery {
                after: Some((2_000, "ev_B".to_string())),
                ..query("a")
            };
            assert_eq!(ids(&store.list_events(&q).await.unwrap()), ["ev_b"]);
            let q = EventQuery {
                limit: 2,
                ..query("a")
            };
            assert_eq!(ids(&store.list_events(&q).await.unwrap()), ["ev_x", "ev_B"]);
            let q = EventQuery {
                from: 1_001,
                to: 2_000,
                ..query("a")
            };
            assert!(
                store.list_events(&q).await.unwrap().is_empty(),
                "to is exclusive"
            );
            let q = EventQuery {
                event_types: vec![S.to_string()],
                ..query("a")
            };
            assert_eq!(ids(&store.list_events(&q).await.unwrap()), ["ev_B"]);
            let q = EventQuery {
                meeting_id: Some("m1".into()),
                ..query("a")
            };
            assert_eq!(ids(&store.list_events(&q).await.unwrap()), ["ev_x", "ev_b"]);
            let q = EventQuery {
                meeting_instance_id: Some("mi_m2".into()),
                ..query("a")
            };
            assert_eq!(ids(&store.list_events(&q).await.unwrap()), ["ev_B"]);

            // A snapshot ignores what commits after it.
            let snapshot = store.max_event_seq().await.unwrap();
            assert!(snapshot > 0);
            let later = WriteBatch {
                events: vec![event("a", 500, "ev_late", "k9", P, None)],
                ..Default::default()
            };
            assert_eq!(store.commit(later.clone()).await.unwrap(), 1);
            assert!(store.max_event_seq().await.unwrap() > snapshot);
            let q = EventQuery {
                max_seq: Some(snapshot),
                ..query("a")
            };
            assert_eq!(
                ids(&store.list_events(&q).await.unwrap()),
                ["ev_x", "ev_B", "ev_b"]
            );
            assert_eq!(store.list_events(&query("a")).await.unwrap().len(), 4);

            let keys = ["k1".to_string(), "k2".to_string(), "k7".to_string()];
            let mut found = store.existing_dedup_keys("a", &keys).await.unwrap();
            found.sort();
            assert_eq!(found, ["k1", "k2"]);
        },
    )
    .await;
}

fn sample_row(ts: i64) -> SampleRow {
    SampleRow {
        account_id: "a".into(),
        received_ms: ts + 1,
        ts,
        interval_s: 60,
        route: "mi_1".into(),
        body: format!(r#"{{"ts":{ts}}}"#),
    }
}

fn instance(id: &str, first_seq: i64, status: InstanceStatus, end_ts: Option<i64>) -> InstanceRow {
    InstanceRow {
        account_id: "a".into(),
        instance_id: id.into(),
        kind: "meeting".into(),
        series_id: format!("m-{id}"),
        direction: None,
        meeting_type: "meeting".into(),
        first_seq,
        status,
        end_ts,
        ended_explicitly: end_ts.is_some(),
    }
}

#[tokio::test]
async fn the_sample_log_instances_and_watermark_rebuild_state() {
    on_both(
        "the_sample_log_instances_and_watermark_rebuild_state",
        |store| async move {
            assert_eq!(store.next_sample_seq().await.unwrap(), 1);
            assert_eq!(store.replay_from().await.unwrap(), 0);
            let batch = WriteBatch {
                samples: (1..=5).map(|i| (i, sample_row(i * 1_000))).collect(),
                instances: vec![
                    instance("mi_1", 1, InstanceStatus::Open, None),
                    instance("mi_2", 2, InstanceStatus::Open, None),
                    instance("mi_3", 3, InstanceStatus::Open, None),
                ],
                ..Default::default()
            };
            store.commit(batch.clone()).await.unwrap();
            // Later: one instance ends, one closes (its summary committed), watermark moves.
            let batch = WriteBatch {
                instances: vec![
                    instance("mi_2", 2, InstanceStatus::Ended, Some(7_000)),
                    instance("mi_3", 3, InstanceStatus::Closed, Some(8_000)),
                ],
                replay_from: Some(3),
                ..Default::default()
            };
            store.commit(batch.clone()).await.unwrap();

            assert_eq!(store.next_sample_seq().await.unwrap(), 6);
            assert_eq!(store.replay_from().await.unwrap(), 3);
            let from = store.samples_from(3, 2).await.unwrap();
            assert_eq!(from.iter().map(|s| s.seq).collect::<Vec<_>>(), [3, 4]);
            assert_eq!(from[0].row, sample_row(3_000));

            let unfinished = store.unfinished_instances().await.unwrap();
            assert_eq!(
                unfinished,
                [
                    instance("mi_1", 1, InstanceStatus::Open, None),
                    instance("mi_2", 2, InstanceStatus::Ended, Some(7_000)),
                ]
            );
            let closed = store.closed_instances_since(8_000).await.unwrap();
            assert_eq!(
                closed,
                [instance("mi_3", 3, InstanceStatus::Closed, Some(8_000))]
            );
            assert!(
                store
                    .closed_instances_since(8_001)
                    .await
                    .unwrap()
                    .is_empty()
            );
        },
    )
    .await;
}

fn webhook(account: &str, id: &str, events: &[&str], created_at: i64) -> WebhookRecord {
    WebhookRecord {
        account_id: account.into(),
        webhook_id: id.into(),
        url: format!("https://example.invalid/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: "s".repeat(20),
        previous_secret: None,
        previous_secret_until: None,
        status: "active".into(),
        description: None,
        max_age_seconds: Some(3_600),
        created_at,
        validated_at: Some(created_at),
        next_validation_at: Some(created_at + 1_000),
        validation_failures: 0,
    }
}

fn attempt(claim: &ClaimedDelivery, at: i64, http: u16, status: &'static str) -> AttemptRecord {
    AttemptRecord {
        claim: claim.clone(),
        attempt: AttemptRow {
            at,
            http_status: Some(http),
            error: (http >= 300).then(|| "http_status".to_string()),
            duration_ms: 12,
            response_body: format!("answer {http}"),
        },
        status,
        next_attempt_at: (status == "pending").then_some(at + 300_000),
        disable_webhook: false,
    }
}

#[tokio::test]
async fn deliveries_are_created_with_events_claimed_once_recorded_under_their_lease() {
    on_both(
        "deliveries_are_created_with_events_claimed_once_recorded_under_their_lease",
        |store| async move {
            const C: &str = "qss.phone_call_qos";
            const P: &str = "qss.meeting_participant_qos";
            create(&store, "acct", "s", "k").await;
            for i in 0..20 {
                let w = webhook("acct", &format!("wh_{i:02}"), &[P], 10 + i);
                assert!(store.insert_webhook(&w).await.unwrap());
            }
            assert!(
                !store
                    .insert_webhook(&webhook("acct", "wh_21", &[C], 99))
                    .await
                    .unwrap(),
                "20 at most"
            );
            let list = store.list_webhooks("acct").await.unwrap();
            assert_eq!(list.len(), 20);
            assert_eq!(list[0].webhook_id, "wh_00");
            for i in 1..20 {
                assert!(
                    store
                        .delete_webhook("acct", &format!("wh_{i:02}"))
                        .await
                        .unwrap()
                );
            }
            assert!(!store.delete_webhook("acct", "wh_01").await.unwrap());
            assert!(
                store
                    .insert_webhook(&webhook("acct", "wh_c", &[C], 50))
                    .await
                    .unwrap()
            );
            let mut paused = webhook("acct", "wh_p", &[C], 60);
            paused.status = "paused".into();
            assert!(store.insert_webhook(&paused).await.unwrap());
            assert_eq!(
                store.get_webhook("acct", "wh_c").await.unwrap(),
                Some(webhook("acct", "wh_c", &[C], 50))
            );
            assert_eq!(
                store
                    .webhooks_due_for_validation(1_055)
                    .await
                    .unwrap()
                    .len(),
                2,
                "wh_00 and wh_c"
            );

            // Events create deliveries for the active subscriptions of their type only.
            let batch = WriteBatch {
                events: vec![
                    event("acct", 1_000, "ev_1", "k1", C, None),
                    event("acct", 1_001, "ev_2", "k2", C, None),
                    event("acct", 1_002, "ev_3", "k3", P, None),
                ],
                ..Default::default()
            };
            assert_eq!(store.commit(batch.clone()).await.unwrap(), 3);
            assert_eq!(
                store.pending_deliveries().await.unwrap(),
                3,
                "2 to wh_c, 1 to wh_00"
            );
            let due: Vec<String> = store
                .webhooks_with_due_work(2_000)
                .await
                .unwrap()
                .into_iter()
                .map(|w| w.webhook_id)
                .collect();
            assert_eq!(due.len(), 2, "{due:?}");

            // A claim leases; a second claim meanwhile gets nothing.
            let claimed = store
                .claim_due("acct", "wh_c", 2_000, 10, 30_000)
                .await
                .unwrap();
            assert_eq!(claimed.len(), 2);
            assert_eq!(claimed[0].event_id, "ev_1");
            assert_eq!(claimed[0].body.as_deref(), Some(r#"{"id":"ev_1"}"#));
            assert_eq!(claimed[0].attempt_count, 0);
            assert!(
                store
                    .claim_due("acct", "wh_c", 2_001, 10, 30_000)
                    .await
                    .unwrap()
                    .is_empty()
            );

            // Results land only under their lease: first a 500 (retry later), then a stale one.
            let recorded = store
                .record_attempts(&[
                    attempt(&claimed[0], 2_100, 500, "pending"),
                    attempt(&claimed[1], 2_100, 200, "succeeded"),
                ])
                .await
                .unwrap();
            assert_eq!(recorded, 2);
            let stale = store
                .record_attempts(&[attempt(&claimed[1], 2_200, 200, "succeeded")])
                .await
                .unwrap();
            assert_eq!(stale, 0, "no lease, no record");
            let (d, attempts) = store
                .get_delivery("acct", "wh_c", &claimed[0].delivery_id, 2_300)
                .await
                .unwrap()
                .expect("stored");
            assert_eq!(
                (d.status.as_str(), d.attempt_count, d.next_attempt_at),
                ("pending", 1, Some(302_100))
            );
            assert!(!d.in_flight);
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].http_status, Some(500));
            assert_eq!(attempts[0].response_body, "answer 500");
            assert!(
                store
                    .claim_due("acct", "wh_c", 3_000, 10, 30_000)
                    .await
                    .unwrap()
                    .is_empty(),
                "not due yet"
            );

            // Manual retry makes it due now; a re-claim carries a new fencing token.
            assert!(
                store
                    .retry_delivery("acct", &claimed[0].delivery_id, 4_000)
                    .await
                    .unwrap()
            );
            let again = store
                .claim_due("acct", "wh_c", 4_000, 10, 30_000)
                .await
                .unwrap();
            assert_eq!(again.len(), 1);
            assert!(again[0].lease_token > claimed[0].lease_token);
            assert!(
                !store
                    .retry_delivery("acct", &claimed[0].delivery_id, 4_001)
                    .await
                    .unwrap(),
                "in flight"
            );
            store.release_claims(&again).await.unwrap();
            assert_eq!(
                store
                    .claim_due("acct", "wh_c", 4_002, 10, 30_000)
                    .await
                    .unwrap()
                    .len(),
                1,
                "released"
            );

            let log = store
                .list_deliveries("acct", "wh_c", None, None, 0, 10_000, None, 10, 5_000)
                .await
                .unwrap();
            assert_eq!(log.len(), 2);
            assert!(log[0].created_at >= log[1].created_at, "newest first");
            let succeeded = store
                .list_deliveries(
                    "acct",
                    "wh_c",
                    Some("succeeded"),
                    None,
                    0,
                    10_000,
                    None,
                    10,
                    5_000,
                )
                .await
                .unwrap();
            assert_eq!(succeeded.len(), 1);
            assert_eq!(succeeded[0].event_id, "ev_2");

            // Replay: new deliveries of stored events to one subscription.
            let types = vec![C.to_string()];
            assert_eq!(
                store.count_events("acct", &types, 0, 10_000).await.unwrap(),
                2
            );
            assert_eq!(
                store
                    .replay("acct", "wh_c", &types, 0, 1_001, 6_000)
                    .await
                    .unwrap(),
                1
            );

            // Disabling cancels what is pending; deleting the account disables everything.
            let mut w = store.get_webhook("acct", "wh_c").await.unwrap().unwrap();
            w.status = "disabled".into();
            assert!(store.update_webhook(&w).await.unwrap());
            assert!(
                store
                    .webhooks_with_due_work(10_000)
                    .await
                    .unwrap()
                    .iter()
                    .all(|w| w.webhook_id != "wh_c")
            );
            assert!(store.delete_account("acct", 7_000).await.unwrap());
            assert_eq!(
                store
                    .get_webhook("acct", "wh_00")
                    .await
                    .unwrap()
                    .unwrap()
                    .status,
                "disabled"
            );
            assert_eq!(store.pending_deliveries().await.unwrap(), 0);
        },
    )
    .await;
}

#[tokio::test]
async fn retention_removes_old_events_and_samples_in_batches_but_keeps_what_replay_needs() {
    on_both(
        "retention_removes_old_events_and_samples_in_batches_but_keeps_what_replay_needs",
        |store| async move {
            const C: &str = "qss.phone_call_qos";
            let day = 86_400_000;
            let events = (0..12_000)
                .map(|i| {
                    let key = format!("k{i}");
                    event(
                        "a",
                        i64::from(i % 2) * 10 * day + i64::from(i),
                        &key,
                        &key,
                        C,
                        None,
                    )
                })
                .collect();
            let samples = (1..=100)
                .map(|i| (i, sample_row(if i <= 60 { 0 } else { 10 * day })))
                .collect();
            store
                .commit(WriteBatch {
                    events,
                    samples,
                    replay_from: Some(51),
                    ..Default::default()
                })
                .await
                .unwrap();

            let cutoff = 5 * day;
            let mut deleted = 0;
            while let n @ 1.. = store.delete_old_events("a", cutoff).await.unwrap() {
                assert!(n <= 5_000, "batches of 5,000 at most");
                deleted += n;
            }
            assert_eq!(deleted, 6_000);
            let cutoffs = HashMap::from([("a".to_string(), cutoff)]);
            let keep_from = store.replay_from().await.unwrap();
            let mut gone = 0;
            while let n @ 1.. = store.delete_old_samples(&cutoffs, keep_from).await.unwrap() {
                gone += n;
            }
            // Samples 1..=50 are old and below the watermark; 51..=60 are old but still needed.
            assert_eq!(gone, 50);
            assert_eq!(
                store
                    .samples_from(0, 1_000)
                    .await
                    .unwrap()
                    .first()
                    .unwrap()
                    .seq,
                51
            );

            // Closed instances that ended long ago go too; open ones stay.
            let batch = WriteBatch {
                instances: vec![
                    instance("mi_old", 1, InstanceStatus::Closed, Some(1_000)),
                    instance("mi_open", 2, InstanceStatus::Open, None),
                ],
                ..Default::default()
            };
            store.commit(batch.clone()).await.unwrap();
            assert_eq!(store.delete_finished_instances(cutoff).await.unwrap(), 1);
            assert_eq!(store.unfinished_instances().await.unwrap().len(), 1);
        },
    )
    .await;
}

#[tokio::test]
async fn retention_keeps_an_event_with_a_pending_delivery_then_trims_the_delivery_log() {
    on_both(
        "retention_keeps_an_event_with_a_pending_delivery_then_trims_the_delivery_log",
        |store| async move {
            const C: &str = "qss.phone_call_qos";
            create(&store, "a", "s", "k").await;
            assert!(
                store
                    .insert_webhook(&webhook("a", "wh_1", &[C], 0))
                    .await
                    .unwrap()
            );
            let batch = WriteBatch {
                events: vec![event("a", 1_000, "ev", "k", C, None)],
                ..Default::default()
            };
            store.commit(batch.clone()).await.unwrap();
            assert_eq!(
                store.delete_old_events("a", 10_000).await.unwrap(),
                0,
                "a pending delivery keeps its event"
            );

            let claimed = store
                .claim_due("a", "wh_1", 2_000, 10, 30_000)
                .await
                .unwrap();
            assert_eq!(claimed.len(), 1);
            let record = attempt(&claimed[0], 2_000, 200, "succeeded");
            assert_eq!(
                store
                    .record_attempts(std::slice::from_ref(&record))
                    .await
                    .unwrap(),
                1
            );
            // A finished delivery is never overwritten, even under the lease that claimed it.
            assert_eq!(store.record_attempts(&[record]).await.unwrap(), 0);

            assert_eq!(store.delete_old_events("a", 10_000).await.unwrap(), 1);
            assert_eq!(store.delete_old_deliveries(10_000).await.unwrap(), 1);
            assert!(
                store
                    .get_delivery("a", "wh_1", &claimed[0].delivery_id, 3_000)
                    .await
                    .unwrap()
                    .is_none()
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_deleted_account_is_purged_in_batches() {
    on_both(
        "a_deleted_account_is_purged_in_batches",
        |store| async move {
            const C: &str = "qss.phone_call_qos";
            create(&store, "gone", "s", "k").await;
            create(&store, "kept", "s", "k2").await;
            let events = (0..6_000)
                .map(|i| {
                    let key = format!("k{i}");
                    event(
                        if i < 5_500 { "gone" } else { "kept" },
                        i,
                        &key,
                        &key,
                        C,
                        None,
                    )
                })
                .collect();
            store
                .commit(WriteBatch {
                    events,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(store.delete_account("gone", 10).await.unwrap());
            assert_eq!(store.deleted_accounts().await.unwrap(), ["gone"]);
            assert_eq!(store.purge_account_batch("gone").await.unwrap(), 5_000);
            assert_eq!(store.purge_account_batch("gone").await.unwrap(), 500);
            assert_eq!(store.purge_account_batch("gone").await.unwrap(), 0);
            assert_eq!(
                store.list_events(&query("kept")).await.unwrap().len(),
                100,
                "page of 100"
            );
        },
    )
    .await;
}
