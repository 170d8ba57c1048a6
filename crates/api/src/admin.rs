//! The operator's API (SPEC 3.3): accounts, credentials and ingest keys. The same operations
//! back `qss admin`, which runs them straight on the database.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use qss_domain::ids::{AccountId, generate_client_id, generate_key_id, random_secret};
use qss_domain::{Plan, Settings, ValidationErrors};
use qss_store::{AccountRecord, NewAccount, OPERATOR_CLIENT_ID, Store, StoreError, hash_secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{ALL_SCOPES, authorize_admin};
use crate::{ApiError, AppState};

const BODY_LIMIT: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", get(list_accounts).post(create_account))
        .route(
            "/admin/accounts/{account_id}",
            get(get_account).patch(patch_account).delete(delete_account),
        )
        .route(
            "/admin/accounts/{account_id}/credentials",
            axum::routing::post(create_credentials),
        )
        .route(
            "/admin/accounts/{account_id}/tokens",
            axum::routing::post(issue_token),
        )
        .route(
            "/admin/accounts/{account_id}/credentials/{client_id}",
            delete(revoke_credentials),
        )
        .route(
            "/admin/accounts/{account_id}/ingest_keys",
            get(list_ingest_keys).post(create_ingest_key),
        )
        .route(
            "/admin/accounts/{account_id}/ingest_keys/{key_id}",
            delete(revoke_ingest_key),
        )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountOut {
    pub account_id: String,
    pub name: String,
    pub plan: String,
    pub qss_addon: bool,
    pub qss_enabled: bool,
    pub created_at: String,
}

impl From<&AccountRecord> for AccountOut {
    fn from(a: &AccountRecord) -> Self {
        AccountOut {
            account_id: a.account_id.clone(),
            name: a.name.clone(),
            plan: a.plan.as_str().to_string(),
            qss_addon: a.qss_addon,
            qss_enabled: a.qss_enabled(),
            created_at: qss_domain::timefmt::format_ms(a.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialsOut {
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestKeyOut {
    pub key_id: String,
    pub ingest_key: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountCreatedOut {
    #[serde(flatten)]
    pub account: AccountOut,
    pub credentials: CredentialsOut,
    pub ingest_key: IngestKeyOut,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountListOut {
    pub page_size: usize,
    pub next_page_token: String,
    pub accounts: Vec<AccountOut>,
}

/// A validated `POST /admin/accounts` body.
#[derive(Debug, Clone)]
pub struct AccountIn {
    pub name: String,
    pub plan: Plan,
    pub qss_addon: bool,
}

fn parse_name(v: Option<&Value>, errors: &mut ValidationErrors, required: bool) -> Option<String> {
    match v {
        None if !required => None,
        Some(Value::String(s)) if (1..=128).contains(&s.chars().count()) => Some(s.clone()),
        _ => {
            errors.push("name", "must be a string of 1 to 128 characters");
            None
        }
    }
}

fn parse_plan(v: Option<&Value>, errors: &mut ValidationErrors, required: bool) -> Option<Plan> {
    match v {
        None if !required => None,
        Some(Value::String(s)) if Plan::parse(s).is_some() => Plan::parse(s),
        _ => {
            errors.push("plan", "must be one of pro, business, enterprise");
            None
        }
    }
}

fn parse_addon(v: Option<&Value>, errors: &mut ValidationErrors) -> Option<bool> {
    match v {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        _ => {
            errors.push("qss_addon", "must be a boolean");
            None
        }
    }
}

impl AccountIn {
    pub fn parse(v: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let Some(obj) = v.as_object() else {
            return Err(ValidationErrors::single(
                "",
                "the body must be a JSON object",
            ));
        };
        let name = parse_name(obj.get("name"), &mut errors, true);
        let plan = parse_plan(obj.get("plan"), &mut errors, true);
        let addon = parse_addon(obj.get("qss_addon"), &mut errors);
        match (name, plan) {
            (Some(name), Some(plan)) if errors.is_empty() => Ok(AccountIn {
                name,
                plan,
                qss_addon: addon.unwrap_or(false),
            }),
            _ => Err(errors),
        }
    }
}

/// Parses a scope list (`["qss:read", ...]`); unknown or empty is an error (SPEC 3.2).
pub fn parse_scopes(v: Option<&Value>) -> Result<Vec<String>, ValidationErrors> {
    let Some(v) = v else {
        return Ok(vec!["qss:read".into(), "qss:write".into()]);
    };
    let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
        return Err(ValidationErrors::single(
            "scopes",
            "must be a non-empty array of scopes",
        ));
    };
    let mut errors = ValidationErrors::new();
    let mut scopes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().filter(|s| ALL_SCOPES.contains(s)) {
            Some(s) if !scopes.iter().any(|x| x == s) => scopes.push(s.to_string()),
            Some(_) => {}
            None => errors.push(
                format!("scopes[{i}]"),
                format!("unknown scope; known: {}", ALL_SCOPES.join(", ")),
            ),
        }
    }
    errors.into_result(scopes)
}

/// Creates an account with its first credentials and ingest key. Shared with `qss admin`.
pub async fn create_account_in(
    store: &Store,
    input: &AccountIn,
    now: i64,
) -> Result<AccountCreatedOut, StoreError> {
    let account = AccountRecord {
        account_id: AccountId::generate().as_str().to_string(),
        name: input.name.clone(),
        plan: input.plan,
        qss_addon: input.qss_addon,
        created_at: now,
        settings: Settings::default(),
    };
    let (client_id, client_secret) = (generate_client_id(), random_secret());
    let (key_id, key_secret) = (generate_key_id(), random_secret());
    let scopes = "qss:read qss:write";
    store
        .create_account(&NewAccount {
            account: &account,
            client_id: &client_id,
            client_secret_hash: &hash_secret(&client_secret),
            scopes,
            key_id: &key_id,
            key_secret_hash: &hash_secret(&key_secret),
        })
        .await?;
    Ok(AccountCreatedOut {
        account: AccountOut::from(&account),
        credentials: CredentialsOut {
            client_id,
            client_secret,
            scopes: scopes.split(' ').map(String::from).collect(),
        },
        ingest_key: IngestKeyOut {
            ingest_key: format!("qssik_{key_id}_{key_secret}"),
            key_id,
            created_at: qss_domain::timefmt::format_ms(now),
        },
    })
}

/// Adds credentials to an account. Shared with `qss admin`.
pub async fn create_credentials_in(
    store: &Store,
    account_id: &str,
    scopes: &[String],
    now: i64,
) -> Result<CredentialsOut, StoreError> {
    let (client_id, client_secret) = (generate_client_id(), random_secret());
    store
        .create_credentials(
            account_id,
            &client_id,
            &hash_secret(&client_secret),
            &scopes.join(" "),
            now,
        )
        .await?;
    Ok(CredentialsOut {
        client_id,
        client_secret,
        scopes: scopes.to_vec(),
    })
}

/// Adds an ingest key to an account. Shared with `qss admin`.
pub async fn create_ingest_key_in(
    store: &Store,
    account_id: &str,
    now: i64,
) -> Result<IngestKeyOut, StoreError> {
    let (key_id, key_secret) = (generate_key_id(), random_secret());
    store
        .create_ingest_key(account_id, &key_id, &hash_secret(&key_secret), now)
        .await?;
    Ok(IngestKeyOut {
        ingest_key: format!("qssik_{key_id}_{key_secret}"),
        key_id,
        created_at: qss_domain::timefmt::format_ms(now),
    })
}

async fn existing_account(state: &AppState, account_id: &str) -> Result<AccountRecord, ApiError> {
    state
        .store
        .get_account(account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Account {account_id} does not exist.")))
}

#[utoipa::path(post, path = "/admin/accounts", tag = "admin", security(("admin_token" = [])),
    request_body(content = crate::schemas::AccountCreate),
    responses((status = 201, body = AccountCreatedOut), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn create_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_admin(&state, &headers)?;
    let v = crate::body::read_json(&headers, body, BODY_LIMIT, false).await?;
    let input = AccountIn::parse(&v)?;
    let now = state.clock.now_ms();
    let out = create_account_in(&state.store, &input, now).await?;
    refresh_account(&state, &out.account.account_id).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn refresh_account(state: &AppState, account_id: &str) -> Result<(), ApiError> {
    match state.store.get_account(account_id).await? {
        Some(a) => state.accounts.put(a),
        None => state.accounts.remove(account_id),
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    pub page_size: Option<String>,
    pub next_page_token: Option<String>,
}

/// Parses `page_size` (SPEC 2.1): default 30, an integer in 1..300.
pub fn parse_page_size(v: Option<&str>) -> Result<usize, ApiError> {
    match v {
        None => Ok(30),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=300).contains(n))
            .ok_or_else(|| ApiError::invalid("page_size", "must be an integer between 1 and 300")),
    }
}

#[utoipa::path(get, path = "/admin/accounts", tag = "admin", security(("admin_token" = [])), params(PageParams),
    responses((status = 200, body = AccountListOut), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn list_accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<PageParams>,
) -> Result<Json<AccountListOut>, ApiError> {
    authorize_admin(&state, &headers)?;
    let page_size = parse_page_size(params.page_size.as_deref())?;
    let now = state.clock.now_ms();
    let after: Option<String> = match params.next_page_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(
            crate::page_token::decode(&state.page_key, "admin", now, t)
                .map_err(|m| ApiError::invalid("next_page_token", m))?,
        ),
        None => None,
    };
    let mut rows = state
        .store
        .list_accounts(after.as_deref(), page_size + 1)
        .await?;
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    let next_page_token = match (more, rows.last()) {
        (true, Some(last)) => {
            crate::page_token::encode(&state.page_key, "admin", now, &last.account_id)
        }
        _ => String::new(),
    };
    Ok(Json(AccountListOut {
        page_size,
        next_page_token,
        accounts: rows.iter().map(AccountOut::from).collect(),
    }))
}

#[utoipa::path(get, path = "/admin/accounts/{account_id}", tag = "admin", security(("admin_token" = [])),
    params(("account_id" = String, Path)),
    responses((status = 200, body = AccountOut), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn get_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Result<Json<AccountOut>, ApiError> {
    authorize_admin(&state, &headers)?;
    let a = existing_account(&state, &account_id).await?;
    Ok(Json(AccountOut::from(&a)))
}

#[utoipa::path(patch, path = "/admin/accounts/{account_id}", tag = "admin", security(("admin_token" = [])),
    request_body(content = crate::schemas::AccountPatch),
    params(("account_id" = String, Path)),
    responses((status = 200, body = AccountOut), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn patch_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Body,
) -> Result<Json<AccountOut>, ApiError> {
    authorize_admin(&state, &headers)?;
    let v = crate::body::read_json(&headers, body, BODY_LIMIT, false).await?;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::invalid("", "the body must be a JSON object"));
    };
    let mut errors = ValidationErrors::new();
    let name = parse_name(obj.get("name"), &mut errors, false);
    let plan = parse_plan(obj.get("plan"), &mut errors, false);
    let addon = parse_addon(obj.get("qss_addon"), &mut errors);
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let mut a = existing_account(&state, &account_id).await?;
    if let Some(n) = name {
        a.name = n;
    }
    if let Some(p) = plan {
        a.plan = p;
    }
    if let Some(b) = addon {
        a.qss_addon = b;
    }
    if !state.store.update_account(&a).await? {
        return Err(ApiError::NotFound(format!(
            "Account {account_id} does not exist."
        )));
    }
    state.accounts.put(a.clone());
    Ok(Json(AccountOut::from(&a)))
}

#[utoipa::path(delete, path = "/admin/accounts/{account_id}", tag = "admin", security(("admin_token" = [])),
    params(("account_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn delete_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize_admin(&state, &headers)?;
    let now = state.clock.now_ms();
    if !state.store.delete_account(&account_id, now).await? {
        return Err(ApiError::NotFound(format!(
            "Account {account_id} does not exist."
        )));
    }
    state.accounts.remove(&account_id);
    crate::auth::forget_all(&state);
    // Its subscriptions are disabled: queued deliveries must see it.
    state
        .webhooks_version
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(StatusCode::NO_CONTENT)
}

/// The operator's request for scopes on an existing account: `{"scopes": [...]}`, optional.
async fn scopes_for_account(
    state: &AppState,
    headers: &HeaderMap,
    account_id: &str,
    body: Body,
) -> Result<Vec<String>, ApiError> {
    authorize_admin(state, headers)?;
    let v = crate::body::read_json(headers, body, BODY_LIMIT, true).await?;
    let scopes = parse_scopes(v.get("scopes"))?;
    existing_account(state, account_id).await?;
    Ok(scopes)
}

#[utoipa::path(post, path = "/admin/accounts/{account_id}/credentials", tag = "admin", security(("admin_token" = [])),
    request_body(content = Option<crate::schemas::ScopesIn>),
    params(("account_id" = String, Path)),
    responses((status = 201, body = CredentialsOut), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn create_credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let scopes = scopes_for_account(&state, &headers, &account_id, body).await?;
    let now = state.clock.now_ms();
    let out = create_credentials_in(&state.store, &account_id, &scopes, now).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Issues an access token for an account to the operator: what the dashboard's operator
/// sign-in uses (not in the SPEC). It lasts `auth.token_ttl_seconds` and is tied to no
/// credentials; deleting the account, or `DELETE .../credentials/(operator)`, revokes it.
#[utoipa::path(post, path = "/admin/accounts/{account_id}/tokens", tag = "admin", security(("admin_token" = [])),
    request_body(content = Option<crate::schemas::ScopesIn>),
    params(("account_id" = String, Path)),
    responses((status = 201, body = crate::oauth::TokenOut), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn issue_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let scopes = scopes_for_account(&state, &headers, &account_id, body).await?;
    let out =
        crate::oauth::issue(&state, &account_id, OPERATOR_CLIENT_ID, scopes.join(" ")).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[utoipa::path(delete, path = "/admin/accounts/{account_id}/credentials/{client_id}", tag = "admin", security(("admin_token" = [])),
    params(("account_id" = String, Path), ("client_id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn revoke_credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, client_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize_admin(&state, &headers)?;
    let now = state.clock.now_ms();
    // `(operator)` names the tokens the operator issued for the account: revoking it deletes
    // them all (there are no credentials to mark).
    let operator = client_id == OPERATOR_CLIENT_ID;
    if operator {
        existing_account(&state, &account_id).await?;
    }
    let revoked = state
        .store
        .revoke_credentials(&account_id, &client_id, now)
        .await?;
    if !revoked && !operator {
        return Err(ApiError::NotFound(format!(
            "Credentials {client_id} do not exist."
        )));
    }
    crate::auth::forget_all(&state);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/admin/accounts/{account_id}/ingest_keys", tag = "admin", security(("admin_token" = [])),
    params(("account_id" = String, Path)),
    responses((status = 201, body = IngestKeyOut), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn create_ingest_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Result<Response, ApiError> {
    authorize_admin(&state, &headers)?;
    existing_account(&state, &account_id).await?;
    let now = state.clock.now_ms();
    let out = create_ingest_key_in(&state.store, &account_id, now).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestKeyInfo {
    pub key_id: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestKeyListOut {
    pub ingest_keys: Vec<IngestKeyInfo>,
}

#[utoipa::path(get, path = "/admin/accounts/{account_id}/ingest_keys", tag = "admin", security(("admin_token" = [])),
    params(("account_id" = String, Path)),
    responses((status = 200, body = IngestKeyListOut), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn list_ingest_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Result<Json<IngestKeyListOut>, ApiError> {
    authorize_admin(&state, &headers)?;
    existing_account(&state, &account_id).await?;
    let keys = state.store.list_ingest_keys(&account_id).await?;
    Ok(Json(IngestKeyListOut {
        ingest_keys: keys
            .into_iter()
            .map(|k| IngestKeyInfo {
                key_id: k.key_id,
                created_at: qss_domain::timefmt::format_ms(k.created_at),
                last_used_at: k.last_used_at.map(qss_domain::timefmt::format_ms),
            })
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/admin/accounts/{account_id}/ingest_keys/{key_id}", tag = "admin", security(("admin_token" = [])),
    params(("account_id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn revoke_ingest_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((account_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize_admin(&state, &headers)?;
    let now = state.clock.now_ms();
    if !state
        .store
        .revoke_ingest_key(&account_id, &key_id, now)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "Ingest key {key_id} does not exist."
        )));
    }
    crate::auth::forget_all(&state);
    Ok(StatusCode::NO_CONTENT)
}
