//! The OpenAPI 3 document, generated from the handlers' annotations and the API types.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{routes, ws};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components
            .add_security_scheme("admin", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Parley server API", description = "End-to-end encrypted messaging relay: the server stores and delivers ciphertext only."),
    paths(
        routes::register, routes::account_self, routes::delete_self, routes::upload_prekeys, routes::prekey_status,
        routes::bundles, routes::send, routes::fetch, routes::ack, routes::healthz, routes::admin_stats, ws::ws,
        routes::block, routes::unblock, routes::blocks, routes::admin_create_account, routes::admin_set_age, routes::admin_set_suspension,
        routes::report, routes::admin_reports, routes::admin_report, routes::admin_resolve_report,
        routes::admin_rotate_franking_key,
        routes::kt_root, routes::kt_lookup, routes::kt_history, routes::kt_audit, routes::admin_kt_publish,
    ),
    components(schemas(
        parley_api::RegisterRequest, parley_api::DeviceUpload, parley_api::RegisterResponse, parley_api::AccountInfo,
        parley_api::PrekeyUpload, parley_api::PrekeyStatus, parley_api::BundlesResponse, parley_api::DeviceBundle,
        parley_api::SendRequest, parley_api::OutgoingEnvelope, parley_api::SendResponse, parley_api::StaleDevices,
        parley_api::Envelope, parley_api::FetchResponse, parley_api::AckRequest, parley_api::AckResponse,
        parley_api::ErrorBody, parley_api::Health, parley_api::AdminStats, parley_api::ServerFrame, parley_api::ClientFrame, parley_api::SendFailure,
        parley_api::AgeClass, parley_api::SetAgeRequest, parley_api::SetSuspensionRequest, parley_api::BlockList,
        parley_api::ReportRequest, parley_api::ReportResponse, parley_api::ReportView, parley_api::ReportedMessage,
        parley_api::ResolveRequest, parley_api::ModerationAction, parley_api::RotateResponse,
        parley_api::KtSignedRoot, parley_api::KtRoot, parley_api::KtProofResponse, parley_api::KtAuditResponse,
        parley_api::KtPublishResponse,
    )),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
