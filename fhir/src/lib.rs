//! Clinic's FHIR R4 endpoint (`/fhir`), a process of its own like the
//! gateway: `Patient` and `ImagingStudy` with read, vread, search, create,
//! update, delete and history, served over the services' gRPC APIs with the
//! caller's own token. It holds no data: it checks the token (as every
//! Clinic process does on its own port), and the services check roles, keep
//! revisions and write the audit trail for every call it makes, exactly as
//! for their other clients. Envoy routes `/fhir` to it.
//!
//! # Layout
//! - `config`, `startup`, `main`: the process (HTTP/2 port with gRPC health
//!   for probes, metrics, drain), as every Clinic server.
//! - `model`: Clinic's patients and studies as FHIR resources and back (no I/O).
//! - `search`: FHIR search parameters as the services' filters, orders and
//!   page tokens (no I/O).
//! - `outcome`: every failure as an `OperationOutcome`, mapped once from the
//!   services' statuses.
//! - `capability`: the CapabilityStatement.
//! - `api`: the interactions, each a call (or two) to the services.

mod api;
mod capability;
pub mod config;
mod model;
mod outcome;
mod search;
mod startup;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clinic_auth::Verifier;
use clinic_client::PeerClient;
use clinic_host::public::PublicRoute;
use clinic_layers::BoxFuture;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use api::Fhir;
pub use startup::Application;

/// The process's name in gRPC health (what probes ask for).
pub const HEALTH_NAME: &str = "clinic.fhir";

/// Where the endpoint is served.
pub const PREFIX: &str = "/fhir";

/// Largest request body read, in bytes: a Patient or ImagingStudy is far
/// smaller.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The endpoint as a route of a Clinic server's port.
#[derive(Debug, Clone)]
pub struct FhirRoute {
    router: axum::Router,
    /// Checks tokens before any service is called; none: the services alone
    /// check them.
    verifier: Option<Arc<Verifier>>,
}

impl FhirRoute {
    /// The endpoint over `patients` and `studies`, each call waiting at most
    /// `timeout`, refusing requests whose token `verifier` rejects.
    pub fn new(
        patients: PeerClient,
        studies: PeerClient,
        timeout: Duration,
        verifier: Option<Arc<Verifier>>,
    ) -> Arc<Self> {
        Arc::new(Self { router: api::router(Fhir::new(patients, studies, timeout)), verifier })
    }

    /// Why the request's token is refused, if it is: the metadata is open,
    /// everything else needs a valid token.
    fn refusal(&self, parts: &http::request::Parts) -> Option<outcome::Outcome> {
        let verifier = self.verifier.as_ref()?;
        if parts.uri.path() == "/fhir/metadata" {
            return None;
        }
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let refused = match token.map(|t| verifier.verify(t)) {
            Some(Ok(_)) => return None,
            None => clinic_auth::Rejection::Missing,
            Some(Err(rejection)) => rejection,
        };
        Some(outcome::Outcome::new(http::StatusCode::UNAUTHORIZED, "login", refused.to_string()))
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
        let (head, body) = request.into_parts();
        let refused_early = self.refusal(&head);
        let measured = Measured::of(&head);
        let request = http::Request::from_parts(head, body);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            if let Some(refused) = refused_early {
                measured.done(refused.status);
                return into_tonic(axum::response::IntoResponse::into_response(refused)).await;
            }
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
                    measured.done(outcome.status);
                    return into_tonic(axum::response::IntoResponse::into_response(outcome)).await;
                }
            };
            let request = http::Request::from_parts(parts, axum::body::Body::from(body));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            measured.done(response.status());
            into_tonic(response).await
        })
    }
}

/// One request's place in the metrics: `fhir_requests_total` (by method,
/// resource type and HTTP status) and `fhir_request_duration_seconds`.
struct Measured {
    method: String,
    resource: &'static str,
    started: Instant,
}

impl Measured {
    fn of(parts: &http::request::Parts) -> Self {
        let segment = parts.uri.path().trim_start_matches(PREFIX).trim_start_matches('/');
        let resource = match segment.split('/').next().unwrap_or_default() {
            "Patient" => "Patient",
            "ImagingStudy" => "ImagingStudy",
            "metadata" => "metadata",
            _ => "other",
        };
        Self { method: parts.method.as_str().to_owned(), resource, started: Instant::now() }
    }

    fn done(self, status: http::StatusCode) {
        let (method, resource) = (self.method, self.resource);
        metrics::counter!("fhir_requests_total", "method" => method.clone(), "resource" => resource, "code" => status.as_u16().to_string())
            .increment(1);
        metrics::histogram!("fhir_request_duration_seconds", "method" => method, "resource" => resource)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// An axum response as the server's body type.
async fn into_tonic(response: axum::response::Response) -> http::Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}
