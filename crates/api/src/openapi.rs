//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa).

use serde::Serialize;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The catalogue's error body (SPEC 2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
    /// Present on 400/300.
    pub errors: Option<Vec<FieldErrorOut>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldErrorOut {
    pub field: String,
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "qss", description = "Quality of Service Subscription server"),
    paths(
        crate::ops::healthz, crate::ops::readyz, crate::ops::metrics, crate::ops::openapi,
        crate::oauth::token,
        crate::admin::create_account, crate::admin::list_accounts, crate::admin::get_account,
        crate::admin::patch_account, crate::admin::delete_account, crate::admin::create_credentials,
        crate::admin::issue_token, crate::admin::revoke_credentials, crate::admin::create_ingest_key, crate::admin::list_ingest_keys,
        crate::admin::revoke_ingest_key,
        crate::settings::get_settings, crate::settings::patch_settings,
        crate::ingest::telemetry,
        crate::events::list_events,
        crate::webhooks::create_webhook, crate::webhooks::list_webhooks, crate::webhooks::get_webhook,
        crate::webhooks::patch_webhook, crate::webhooks::delete_webhook, crate::webhooks::validate_webhook,
        crate::webhooks::rotate_secret, crate::deliveries::list_deliveries, crate::deliveries::get_delivery,
        crate::deliveries::retry_delivery, crate::deliveries::replay,
    ),
    components(schemas(ErrorBody, FieldErrorOut)),
    modifiers(&Security, &CommonResponses),
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The responses any operation of a kind can give, added where a handler's annotation does
/// not list them, so that the document describes every status qss answers (SPEC 2):
/// - every operation but the probes: 503 (database unavailable, overloaded, shutting down);
/// - `/v2`: 401, 403, 429 and the rate-limit headers on every response;
/// - `/v2` and `/admin` with a body: 400, 413, 415; with path parameters: 404; `/admin`: 401.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::HttpMethod;
        for (path, item) in doc.paths.paths.iter_mut() {
            let account_api = path.starts_with("/v2/");
            let admin_api = path.starts_with("/admin/");
            let probe = matches!(path.as_str(), "/healthz" | "/metrics" | "/openapi.json");
            for method in [
                HttpMethod::Get,
                HttpMethod::Post,
                HttpMethod::Put,
                HttpMethod::Patch,
                HttpMethod::Delete,
            ] {
                let Some(op) = operation(item, &method) else {
                    continue;
                };
                let has_body = matches!(method, HttpMethod::Post | HttpMethod::Patch);
                let mut add = |status: &str, what: &str, retry_after: bool| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(what, retry_after).into());
                };
                if !probe {
                    add(
                        "503",
                        "Database unavailable, overloaded or shutting down; retry after Retry-After seconds",
                        true,
                    );
                }
                if account_api || admin_api {
                    add("401", "Missing, invalid or expired token (code 124)", false);
                    if path.contains('{') {
                        add("404", "The resource does not exist (code 3001)", false);
                    }
                    if has_body {
                        add("400", "Validation failed (code 300, with errors[])", false);
                        add("413", "Body too large (code 300)", false);
                        add(
                            "415",
                            "Unsupported Content-Type or Content-Encoding (code 300)",
                            false,
                        );
                    }
                }
                if account_api {
                    add(
                        "403",
                        "Another account, a missing scope (code 4711) or QSS not enabled (code 200)",
                        false,
                    );
                    add(
                        "429",
                        "Rate limited (code 429); X-RateLimit-Type: QPS",
                        true,
                    );
                    for response in op.responses.responses.values_mut() {
                        if let utoipa::openapi::RefOr::T(r) = response {
                            rate_limit_headers(r);
                        }
                    }
                }
            }
        }
    }
}

fn operation<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &utoipa::openapi::HttpMethod,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    use utoipa::openapi::HttpMethod;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

/// A catalogue error response (SPEC 2), with `Retry-After` when the client should wait.
fn error_response(description: &str, retry_after: bool) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let mut r = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry_after {
        r = r.header(
            "Retry-After",
            integer_header("Seconds to wait (at least 1)"),
        );
    }
    r.build()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer).build())
        .description(Some(description))
        .build()
}

/// `X-RateLimit-*` (SPEC 2.2) on a `/v2` response. Only the category is always there: a
/// limit turned off (`0`) has no limit to state.
fn rate_limit_headers(r: &mut utoipa::openapi::Response) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let category = HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["Light", "Heavy", "Ingest"]))
                .build(),
        )
        .description(Some("The rate-limit category of the operation"))
        .build();
    r.headers
        .entry("X-RateLimit-Category".into())
        .or_insert(category);
    r.headers
        .entry("X-RateLimit-Limit".into())
        .or_insert_with(|| integer_header("Requests per second of the category"));
    r.headers
        .entry("X-RateLimit-Remaining".into())
        .or_insert_with(|| integer_header("Requests left in the current second"));
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
