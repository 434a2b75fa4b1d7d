//! Clinic's FHIR R4 endpoint (`/fhir`): `Patient` and `ImagingStudy` with
//! read, vread, search, create, update, delete and history, served over the
//! services' gRPC APIs with the caller's own token. It holds no data: the
//! services check roles, keep revisions and write the audit trail for every
//! call it makes, exactly as for their other clients. The gateway process
//! mounts it on its port ([`FhirRoute`]); Envoy routes `/fhir` there.
//!
//! # Layout
//! - `model`: Clinic's patients and studies as FHIR resources and back (no I/O).
//! - `search`: FHIR search parameters as the services' filters, orders and
//!   page tokens (no I/O).
//! - `outcome`: every failure as an `OperationOutcome`, mapped once from the
//!   services' statuses.
//! - `capability`: the CapabilityStatement.
//! - `api`: the interactions, each a call (or two) to the services.

mod api;
mod capability;
mod model;
mod outcome;
mod search;

use std::{sync::Arc, time::Duration};

use clinic_client::PeerClient;
use clinic_host::public::PublicRoute;
use clinic_layers::BoxFuture;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use api::Fhir;

/// Where the endpoint is served.
pub const PREFIX: &str = "/fhir";

/// Largest request body read, in bytes: a Patient or ImagingStudy is far
/// smaller.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The endpoint as a route of a Clinic server's port.
#[derive(Debug, Clone)]
pub struct FhirRoute {
    router: axum::Router,
}

impl FhirRoute {
    /// The endpoint over `patients` and `studies`, each call waiting at most
    /// `timeout`.
    pub fn new(patients: PeerClient, studies: PeerClient, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { router: api::router(Fhir::new(patients, studies, timeout)) })
    }
}

impl PublicRoute for FhirRoute {
    fn serves(&self, request: &http::request::Parts) -> bool {
        let path = request.uri.path();
        path == PREFIX || path.starts_with("/fhir/")
    }

    fn answer(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> BoxFuture<http::Response<tonic::body::Body>> {
        let router = self.router.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // Over HTTP/2 the host is the URI's authority: links are built from it.
            if !parts.headers.contains_key(http::header::HOST)
                && let Some(host) =
                    parts.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(http::header::HOST, host);
            }
            let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
            let body = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let outcome = outcome::Outcome::new(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        "too-costly",
                        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                    );
                    return into_tonic(axum::response::IntoResponse::into_response(outcome)).await;
                }
            };
            let request = http::Request::from_parts(parts, axum::body::Body::from(body));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            into_tonic(response).await
        })
    }
}

/// An axum response as the server's body type.
async fn into_tonic(response: axum::response::Response) -> http::Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}
