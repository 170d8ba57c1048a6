//! Test support: a whole qss server on 127.0.0.1:0 with its own database and a manual clock,
//! driven over real HTTP.
//!
//! The backend is chosen by `QSS_TEST_DATABASE=sqlite|postgres` (default sqlite; CI runs the
//! suite on both): a SQLite file in the app's temporary folder, or a fresh database of the test
//! binary's throwaway PostgreSQL cluster (crates/pgtest).

#![allow(dead_code)]

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use qss_api::ManualClock;
use qss_pgtest::PgCluster;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The storage backend of the servers that [`spawn_app`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `QSS_TEST_DATABASE`: `sqlite` (or unset) or `postgres`; anything else is a mistake.
pub fn backend() -> Backend {
    match std::env::var("QSS_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("QSS_TEST_DATABASE must be sqlite or postgres, not {other:?}"),
    }
}

/// The test binary's PostgreSQL cluster, shared by the apps alive at the moment (each has its
/// own database in it). Only a weak reference is kept here: the cluster stops, and its folder
/// is deleted, when the last app holding it is dropped, so no postgres process outlives the
/// tests (a static `PgCluster` would never be dropped); an app started after that starts a new
/// cluster.
static CLUSTER: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

fn shared_cluster() -> Arc<PgCluster> {
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(PgCluster::start("the end-to-end tests").expect(
        "QSS_TEST_DATABASE=postgres needs PostgreSQL installed (apt-get install -y postgresql)",
    ));
    *slot = Arc::downgrade(&cluster);
    cluster
}

/// A fresh PostgreSQL database, dropped (its sessions closed) when this is dropped. Tests drop
/// their apps without stopping them, and a server's aggregation thread on PostgreSQL, which
/// runs its own runtime, outlives the test's: without its database it no longer reads the log
/// every 100 ms, it only retries a connection once a second.
pub struct PgDatabase {
    cluster: Arc<PgCluster>,
    pub url: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.cluster.drop_database(&self.url);
    }
}

/// Where an app keeps its data: a temporary folder (the SQLite file, anything a test writes)
/// and, on PostgreSQL, its database. It outlives [`TestApp::stop`], so that a test can
/// [`start_in`] the same data again.
pub struct TestData {
    pub dir: tempfile::TempDir,
    pub postgres: Option<PgDatabase>,
}

impl TestData {
    /// Fresh data on the backend of [`backend`].
    pub fn fresh() -> TestData {
        let postgres = match backend() {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let cluster = shared_cluster();
                let url = cluster.create_database();
                Some(PgDatabase { cluster, url })
            }
        };
        TestData {
            dir: tempfile::tempdir().unwrap(),
            postgres,
        }
    }

    /// The `database` setting of a server (or `qss admin`) on this data.
    pub fn database(&self) -> String {
        match &self.postgres {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("qss.db").display()),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub shutdown: CancellationToken,
    pub server: Option<qss_server::Server>,
    /// The folder and database: dropped with the app, or handed back by [`TestApp::stop`].
    pub data: TestData,
}

pub struct TestAccount {
    pub account_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub ingest_key: String,
}

/// Wall-clock milliseconds, rounded down to a whole minute plus `offset_ms`: tests start
/// their manual clock here so that window boundaries are predictable.
pub fn minute_aligned_now(offset_ms: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now.rem_euclid(60_000) + offset_ms
}

pub fn iso(ms: i64) -> String {
    qss_domain::timefmt::format_ms_precise(ms)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Vec::new()).await
}

/// Starts a server; `flags` are configuration overrides (`("auth.token_ttl_seconds", "2")`).
pub async fn spawn_app_with(flags: Vec<(&str, &str)>) -> TestApp {
    start_in(TestData::fresh(), flags, minute_aligned_now(0)).await
}

/// Starts a server on `data` (fresh, or what [`TestApp::stop`] returned).
pub async fn start_in(data: TestData, flags: Vec<(&str, &str)>, clock_ms: i64) -> TestApp {
    let mut overrides = vec![
        ("database".to_string(), data.database()),
        ("admin_token".to_string(), ADMIN_TOKEN.to_string()),
        ("listen".to_string(), "127.0.0.1:0".to_string()),
    ];
    overrides.extend(
        flags
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let config = qss_server::Config::load(None, Vec::new(), &overrides).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = Arc::new(ManualClock::new(clock_ms));
    let shutdown = CancellationToken::new();
    let server = qss_server::start(config, listener, clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    TestApp {
        base,
        client: reqwest::Client::new(),
        clock,
        shutdown,
        server: Some(server),
        data,
    }
}

impl TestApp {
    /// Stops the server and waits for it (open windows stay open in the database); its data
    /// is returned for [`start_in`].
    pub async fn stop(mut self) -> TestData {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            s.wait().await.unwrap();
        }
        self.data
    }

    /// The `database` setting this server runs on (for `qss admin`).
    pub fn database(&self) -> String {
        self.data.database()
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    /// Creates an account through the admin API.
    pub async fn create_account(&self, plan: &str, addon: bool) -> TestAccount {
        let r = self
            .admin(
                reqwest::Method::POST,
                "/admin/accounts",
                Some(json!({"name": "Test", "plan": plan, "qss_addon": addon})),
            )
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        TestAccount {
            account_id: v["account_id"].as_str().unwrap().to_string(),
            client_id: v["credentials"]["client_id"].as_str().unwrap().to_string(),
            client_secret: v["credentials"]["client_secret"]
                .as_str()
                .unwrap()
                .to_string(),
            ingest_key: v["ingest_key"]["ingest_key"].as_str().unwrap().to_string(),
        }
    }

    pub async fn token_for(
        &self,
        account_id: &str,
        client_id: &str,
        secret: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/oauth/token?grant_type=account_credentials&account_id={account_id}",
                self.base
            ))
            .basic_auth(client_id, Some(secret))
            .send()
            .await
            .unwrap()
    }

    /// A bearer token with the account's default credentials (qss:read qss:write).
    pub async fn token(&self, a: &TestAccount) -> String {
        let r = self
            .token_for(&a.account_id, &a.client_id, &a.client_secret)
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn patch_settings(
        &self,
        a: &TestAccount,
        token: &str,
        body: Value,
    ) -> reqwest::Response {
        self.client
            .patch(format!(
                "{}/v2/accounts/{}/qss/settings",
                self.base, a.account_id
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_samples(&self, a: &TestAccount, samples: Value) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/v2/accounts/{}/qss/telemetry",
                self.base, a.account_id
            ))
            .bearer_auth(&a.ingest_key)
            .json(&json!({"samples": samples}))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Every event of the account in the default range (all pages).
    pub async fn all_events(&self, a: &TestAccount, token: &str, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = String::new();
        loop {
            let r = self
                .get(
                    token,
                    &format!(
                        "/v2/accounts/{}/qss/events?page_size=300&{query}&next_page_token={next}",
                        a.account_id
                    ),
                )
                .await;
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            let v: Value = r.json().await.unwrap();
            out.extend(v["events"].as_array().unwrap().iter().cloned());
            next = v["next_page_token"].as_str().unwrap().to_string();
            if next.is_empty() {
                return out;
            }
        }
    }

    /// Moves the clock and waits until the aggregation thread has looked at the new time
    /// (it ticks every 250 ms of real time).
    pub async fn advance(&self, ms: i64) {
        self.clock.advance_ms(ms);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    /// Polls until `pred` holds for the account's events (at most 10 s of real time).
    pub async fn wait_for_events(
        &self,
        a: &TestAccount,
        token: &str,
        query: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        for _ in 0..50 {
            let events = self.all_events(a, token, query).await;
            if pred(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("events did not reach the expected state in time");
    }
}

impl TestApp {
    /// Extra credentials for an account, with the given scopes: `(client_id, client_secret)`.
    pub async fn create_credentials(&self, account_id: &str, scopes: &[&str]) -> (String, String) {
        let r = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/accounts/{account_id}/credentials"),
                Some(json!({"scopes": scopes})),
            )
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        (
            v["client_id"].as_str().unwrap().to_string(),
            v["client_secret"].as_str().unwrap().to_string(),
        )
    }

    /// A bearer token exchanged from explicit credentials.
    pub async fn token_with(&self, account_id: &str, client_id: &str, secret: &str) -> String {
        let r = self.token_for(account_id, client_id, secret).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    /// Any request: `auth` is the whole `Authorization` header value (or none), `body` is sent
    /// as is with `content_type` (or none).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut r = self
            .client
            .request(method, format!("{}{path_and_query}", self.base));
        if let Some(a) = auth {
            r = r.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(ct) = content_type {
            r = r.header(reqwest::header::CONTENT_TYPE, ct);
        }
        r.body(body).send().await.unwrap()
    }

    /// A telemetry request with the account's ingest key and an arbitrary body.
    pub async fn post_telemetry_raw(
        &self,
        a: &TestAccount,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let path = format!("/v2/accounts/{}/qss/telemetry", a.account_id);
        self.raw(
            reqwest::Method::POST,
            &path,
            Some(&format!("Bearer {}", a.ingest_key)),
            Some(content_type),
            body,
        )
        .await
    }
}
