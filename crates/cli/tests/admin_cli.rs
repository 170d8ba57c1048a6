//! `qss admin` works offline on the database of a running server (SPEC 3.3): what it creates
//! is usable at once, what it revokes is refused within a second. It runs on the backend of
//! `QSS_TEST_DATABASE`, as the in-process server does.

mod common;

use std::process::Command;

use serde_json::Value;

/// `qss admin --database <database> <args>`, its output parsed.
fn qss_admin(database: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_qss"))
        .args(["admin", "--database", database])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qss admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn accounts_made_with_qss_admin_work_on_a_running_server_and_deletion_applies_within_a_second()
 {
    let app = common::spawn_app().await;
    let db = app.database();

    let created = qss_admin(
        &db,
        &[
            "create-account",
            "--name",
            "Offline",
            "--plan",
            "enterprise",
            "--qss-addon",
        ],
    );
    let account = common::TestAccount {
        account_id: created["account_id"].as_str().unwrap().to_string(),
        client_id: created["credentials"]["client_id"]
            .as_str()
            .unwrap()
            .to_string(),
        client_secret: created["credentials"]["client_secret"]
            .as_str()
            .unwrap()
            .to_string(),
        ingest_key: created["ingest_key"]["ingest_key"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    let token = app.token(&account).await;
    // The server's view of accounts is refreshed every second.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = app
        .get(
            &token,
            &format!("/v2/accounts/{}/qss/events", account.account_id),
        )
        .await;
    assert_eq!(r.status(), 200);

    let listed = qss_admin(&db, &["list-accounts"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["account_id"] == created["account_id"])
    );

    qss_admin(&db, &["delete-account", &account.account_id]);
    // Cached lookups live one second of the server's clock.
    app.clock.advance_ms(1100);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = app
        .get(
            &token,
            &format!("/v2/accounts/{}/qss/events", account.account_id),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .token_for(
            &account.account_id,
            &account.client_id,
            &account.client_secret,
        )
        .await;
    assert_eq!(r.status(), 401);
}

#[test]
fn qss_admin_explains_a_bad_plan() {
    // About the arguments, not the backend: a SQLite file needs no server.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qss"))
        .args(["admin", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("q.db").display()))
        .args(["create-account", "--name", "X", "--plan", "gold"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plan must be pro, business or enterprise")
    );
}
