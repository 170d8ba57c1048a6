//! Tenant isolation (issue 7): every operation of the account API, as the OpenAPI document
//! lists it, is called with real ids of one account and the credentials of another (a token,
//! an ingest key): 403/200 each time. Then with a token and an ingest key of the account
//! whose credentials and key were revoked: 401/124 each time. Afterwards the account's
//! settings, subscriptions and deliveries are as they were.

mod common;
mod webhook_support;

use reqwest::Method;
use serde_json::{Value, json};
use webhook_support::{Fixture, PHONE, RECEIVER_SECRET, Receiver};

/// `(method, path template)` of every `/v2` operation in `/openapi.json`.
async fn account_operations(f: &Fixture) -> Vec<(Method, String)> {
    let doc: Value = f
        .app
        .client
        .get(format!("{}/openapi.json", f.app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v2/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) {
                ops.push((m, path.clone()));
            }
        }
    }
    ops.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    ops
}

/// Calls `method path` with `bearer` and a JSON body that would be valid for most writes;
/// returns the status and the body.
async fn call(f: &Fixture, method: &Method, path: &str, bearer: &str) -> (u16, Value) {
    let mut r = f
        .app
        .client
        .request(method.clone(), format!("{}{path}", f.app.base))
        .bearer_auth(bearer);
    if matches!(*method, Method::POST | Method::PATCH) {
        r = r.json(&json!({"retention_days": 7, "samples": [], "url": "http://127.0.0.1:9/x"}));
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// What an account looks like through its own token: settings, subscriptions, deliveries.
async fn snapshot(f: &Fixture, webhook_id: &str) -> Value {
    let settings_path = format!("/v2/accounts/{}/qss/settings", f.account.account_id);
    let (status, settings) = f.call(Method::GET, &settings_path, None).await;
    assert_eq!(status, 200);
    json!({"settings": settings, "webhooks": f.list_webhooks().await,
           "deliveries": f.deliveries(webhook_id).await})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_refuses_another_accounts_and_revoked_credentials() {
    // Arrange: an account with a subscription and a delivered event, and an intruder.
    let f = Fixture::start(vec![("webhook.allow_private_networks", "true")]).await;
    let receiver = Receiver::start().await;
    let webhook = f
        .subscribe(&receiver.url(), RECEIVER_SECRET, &[PHONE])
        .await;
    let webhook_id = webhook["id"].as_str().unwrap().to_string();
    f.emit_calls(1).await;
    receiver
        .wait_for_hits(1, std::time::Duration::from_secs(10))
        .await;
    let delivery_id = f.deliveries(&webhook_id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let intruder = f.app.create_account("business", true).await;
    let intruder_token = f.app.token(&intruder).await;
    let before = snapshot(&f, &webhook_id).await;

    let ops = account_operations(&f).await;
    assert!(ops.len() >= 15, "only {} operations: {ops:?}", ops.len());
    let concrete = |template: &str| {
        template
            .replace("{account_id}", &f.account.account_id)
            .replace("{webhook_id}", &webhook_id)
            .replace("{delivery_id}", &delivery_id)
    };

    // Act / Assert: another account's token and ingest key.
    for (method, template) in &ops {
        let path = concrete(template);
        assert!(!path.contains('{'), "an unfilled parameter in {path}");
        for (what, bearer) in [
            ("token", intruder_token.as_str()),
            ("ingest key", intruder.ingest_key.as_str()),
        ] {
            let (status, body) = call(&f, method, &path, bearer).await;
            assert_eq!(
                (status, body["code"].as_i64()),
                (403, Some(200)),
                "{method} {template} with another account's {what}: {body}"
            );
        }
    }

    // Revoked credentials and a revoked ingest key of the account itself.
    let made = f
        .app
        .admin(
            Method::POST,
            &format!("/admin/accounts/{}/credentials", f.account.account_id),
            Some(json!({"scopes": ["qss:read", "qss:write", "qss:ingest"]})),
        )
        .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let client_id = made["client_id"].as_str().unwrap();
    let r = f
        .app
        .token_for(
            &f.account.account_id,
            client_id,
            made["client_secret"].as_str().unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let revoked_token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (key_id, _) = qss_domain::ids::split_ingest_key(&f.account.ingest_key).unwrap();
    for path in [
        format!(
            "/admin/accounts/{}/credentials/{client_id}",
            f.account.account_id
        ),
        format!(
            "/admin/accounts/{}/ingest_keys/{key_id}",
            f.account.account_id
        ),
    ] {
        let r = f.app.admin(Method::DELETE, &path, None).await;
        assert_eq!(r.status(), 204, "DELETE {path}");
    }
    for (method, template) in &ops {
        let path = concrete(template);
        for (what, bearer) in [
            ("revoked credentials' token", revoked_token.as_str()),
            ("revoked ingest key", f.account.ingest_key.as_str()),
        ] {
            let (status, body) = call(&f, method, &path, bearer).await;
            assert_eq!(
                (status, body["code"].as_i64()),
                (401, Some(124)),
                "{method} {template} with a {what}: {body}"
            );
        }
    }

    // Nothing of the account changed.
    assert_eq!(snapshot(&f, &webhook_id).await, before);
}
