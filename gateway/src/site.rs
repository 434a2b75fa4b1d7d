//! The listing page's static files, served by the gateway next to gRPC.
//!
//! The page's files hold no data (every call the page makes carries the
//! user's token), so they are public: `GET /`, `/index.html` and `/web/…`
//! are answered from a folder before any gRPC layer runs; every other path
//! goes to the gRPC stack and its authentication as usual. The answers carry
//! a strict Content-Security-Policy: the page may load and call only its own
//! origin.

use std::path::Path;

use http::{HeaderValue, Method, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use clinic_host::public::PublicRoute;
use clinic_layers::BoxFuture;

/// The path prefix of the page's scripts and styles.
pub const PAGE_PREFIX: &str = "/web/";

/// What the page may do in a browser: only talk to, and load from, its own
/// origin; no frames, no inline scripts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A folder of static files (`index.html`, `web/…`).
#[derive(Debug, Clone)]
pub struct Site {
    files: ServeDir,
}

impl Site {
    /// The files under `root`.
    pub fn new(root: impl AsRef<Path>) -> Self {
        Self { files: ServeDir::new(root).append_index_html_on_directories(true) }
    }
}

/// Whether a request for `path` asks for one of the page's files rather
/// than an rpc.
fn is_page(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && (path == "/" || path == "/index.html" || path.starts_with(PAGE_PREFIX))
}

impl PublicRoute for Site {
    fn serves(&self, request: &http::request::Parts) -> bool {
        is_page(&request.method, request.uri.path())
    }

    fn answer(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> BoxFuture<http::Response<tonic::body::Body>> {
        let files = self.files.clone();
        Box::pin(async move {
            let response = match files.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let mut response = response.map(tonic::body::Body::new);
            let headers = response.headers_mut();
            headers
                .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_of_the_page_paths_are_the_sites() {
        assert!(is_page(&Method::GET, "/"));
        assert!(is_page(&Method::GET, "/web/app.js"));
        assert!(is_page(&Method::HEAD, "/index.html"));
        assert!(!is_page(&Method::POST, "/"));
        assert!(!is_page(&Method::POST, "/clinic.patients.v1.PatientService/GetPatient"));
        assert!(!is_page(&Method::GET, "/clinic.patients.v1.PatientService/GetPatient"));
    }
}
