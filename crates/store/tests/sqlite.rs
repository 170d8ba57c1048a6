//! The SQLite store against a real file: commits, pages, retention.

use std::collections::HashMap;

use qss_store::{EventQuery, NewEvent, SampleRow, SqliteStore, WriteBatch};

fn event(account: &str, ts: i64, key: &str) -> NewEvent {
    NewEvent {
        id: qss_domain::event::new_event_id(ts),
        account_id: account.into(),
        event_type: "qss.phone_call_qos".into(),
        event_ts: ts,
        meeting_id: None,
        meeting_instance_id: None,
        participant_id: None,
        call_id: Some("c".into()),
        dedup_key: key.into(),
        body: "{}".into(),
    }
}

fn sample(account: &str, ts: i64) -> SampleRow {
    SampleRow {
        account_id: account.into(),
        received_ms: ts,
        ts,
        interval_s: 60,
        route: "0".into(),
        body: "{}".into(),
    }
}

#[test]
fn an_event_with_a_stored_dedup_key_is_never_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_exclusive(&dir.path().join("q.db")).unwrap();
    let batch = WriteBatch {
        events: vec![event("a", 1000, "k1"), event("a", 1001, "k1")],
        ..Default::default()
    };
    assert_eq!(store.commit(&batch).unwrap(), 1);
    assert_eq!(store.commit(&batch).unwrap(), 0);
    let q = EventQuery {
        account_id: "a".into(),
        from: 0,
        to: 10_000,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_events(&q).unwrap().len(), 1);
}

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

#[test]
fn retention_removes_old_events_and_samples_but_keeps_what_replay_needs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_exclusive(&dir.path().join("q.db")).unwrap();
    let day = 86_400_000;
    let events = (0..12_000)
        .map(|i| {
            event(
                "a",
                i64::from(i % 2) * 10 * day + i64::from(i),
                &format!("k{i}"),
            )
        })
        .collect();
    let samples = (1..=100)
        .map(|i| (i, sample("a", if i <= 60 { 0 } else { 10 * day })))
        .collect();
    store
        .commit(&WriteBatch {
            events,
            samples,
            replay_from: Some(51),
            ..Default::default()
        })
        .unwrap();

    let cutoff = 5 * day;
    let mut deleted = 0;
    while let n @ 1.. = store.delete_old_events("a", cutoff).unwrap() {
        assert!(n <= 5000);
        deleted += n;
    }
    assert_eq!(deleted, 6000);
    let cutoffs = HashMap::from([("a".to_string(), cutoff)]);
    let mut gone = 0;
    while let n @ 1.. = store
        .delete_old_samples(&cutoffs, store.replay_from().unwrap())
        .unwrap()
    {
        gone += n;
    }
    // Samples 1..=50 are old and below the watermark; 51..=60 are old but still needed.
    assert_eq!(gone, 50);
    assert_eq!(
        store.samples_from(0, 1000).unwrap().first().unwrap().seq,
        51
    );
}

#[test]
fn retention_keeps_an_event_with_a_pending_delivery_and_then_trims_the_delivery_log() {
    use qss_store::{AttemptRecord, AttemptRow, WebhookRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_exclusive(&dir.path().join("q.db")).unwrap();
    let webhook = WebhookRecord {
        account_id: "a".into(),
        webhook_id: "wh_1".into(),
        url: "https://example.invalid/hook".into(),
        events: vec!["qss.phone_call_qos".into()],
        secret: "s".repeat(20),
        previous_secret: None,
        previous_secret_until: None,
        status: "active".into(),
        description: None,
        max_age_seconds: None,
        created_at: 0,
        validated_at: Some(0),
        next_validation_at: None,
        validation_failures: 0,
    };
    assert!(store.insert_webhook(&webhook).unwrap());
    // The event's commit creates its delivery in the same transaction.
    store
        .commit(&WriteBatch {
            events: vec![event("a", 1000, "k")],
            ..Default::default()
        })
        .unwrap();

    assert_eq!(
        store.delete_old_events("a", 10_000).unwrap(),
        0,
        "pending delivery keeps the event"
    );

    let claimed = store.claim_due("a", "wh_1", 2000, 10, 30_000).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].body.as_deref(), Some("{}"));
    let attempt = AttemptRow {
        at: 2000,
        http_status: Some(200),
        error: None,
        duration_ms: 1,
        response_body: String::new(),
    };
    let record = AttemptRecord {
        claim: claimed[0].clone(),
        attempt,
        status: "succeeded",
        next_attempt_at: None,
        disable_webhook: false,
    };
    assert_eq!(
        store
            .record_attempts(std::slice::from_ref(&record))
            .unwrap(),
        1
    );
    // A finished delivery is never overwritten, even under the lease that claimed it.
    assert_eq!(store.record_attempts(&[record]).unwrap(), 0);

    assert_eq!(store.delete_old_events("a", 10_000).unwrap(), 1);
    assert_eq!(store.delete_old_deliveries(10_000).unwrap(), 1);
    assert!(
        store
            .get_delivery("a", "wh_1", &claimed[0].delivery_id, 3000)
            .unwrap()
            .is_none()
    );
}

#[test]
fn deleting_an_account_disables_its_webhooks_and_cancels_pending_deliveries() {
    use qss_domain::{Plan, Settings};
    use qss_store::{AccountRecord, NewAccount, WebhookRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_exclusive(&dir.path().join("q.db")).unwrap();
    let account = AccountRecord {
        account_id: "a".repeat(16),
        name: "A".into(),
        plan: Plan::Business,
        qss_addon: true,
        created_at: 0,
        settings: Settings::default(),
    };
    store
        .create_account(&NewAccount {
            account: &account,
            client_id: "c",
            client_secret_hash: &[1; 32],
            scopes: "qss:read",
            key_id: "k",
            key_secret_hash: &[2; 32],
        })
        .unwrap();
    let webhook = WebhookRecord {
        account_id: account.account_id.clone(),
        webhook_id: "wh_1".into(),
        url: "https://example.invalid/hook".into(),
        events: vec!["qss.phone_call_qos".into()],
        secret: "s".repeat(20),
        previous_secret: None,
        previous_secret_until: None,
        status: "active".into(),
        description: None,
        max_age_seconds: None,
        created_at: 0,
        validated_at: Some(0),
        next_validation_at: None,
        validation_failures: 0,
    };
    store.insert_webhook(&webhook).unwrap();
    store
        .commit(&WriteBatch {
            events: vec![event(&account.account_id, 1000, "k")],
            ..Default::default()
        })
        .unwrap();

    assert!(store.delete_account(&account.account_id, 2000).unwrap());
    assert_eq!(
        store
            .get_webhook(&account.account_id, "wh_1")
            .unwrap()
            .unwrap()
            .status,
        "disabled"
    );
    assert!(
        store
            .claim_due(&account.account_id, "wh_1", 3000, 10, 30_000)
            .unwrap()
            .is_empty()
    );
    let log = store
        .list_deliveries(
            &account.account_id,
            "wh_1",
            None,
            None,
            0,
            10_000,
            None,
            10,
            3000,
        )
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, "cancelled");
}
