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
    modifiers(&Security),
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

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
