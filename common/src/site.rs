//! What a port serves besides gRPC: the listing page's static files, and
//! the JWKS the process trusts.
//!
//! The page's files hold no data (every call the page makes carries the
//! user's token), so they are public: `GET /`, `/index.html` and `/web/…`
//! are answered from a folder before any gRPC layer runs; every other path
//! goes to the gRPC stack and its authentication as usual. The answers carry
//! a strict Content-Security-Policy: the page may load and call only its own
//! origin.
//!
//! `GET /.well-known/jwks.json` answers the keys the process trusts now
//! (the last good version of its JWKS file, usable keys only): Envoy fetches
//! it from the gateway every few seconds, so a key added to or removed from
//! the file reaches the edge without a restart, and a broken file never does.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Method, header};
use tower::{Service, ServiceExt};
use tower_http::services::ServeDir;

use crate::{auth::Verifier, layers::BoxFuture};

/// A body that yields its bytes in one frame.
struct Full(Option<bytes::Bytes>);

impl http_body::Body for Full {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// The path prefix of the page's scripts and styles.
pub const PAGE_PREFIX: &str = "/web/";

/// Where the trusted JWKS is published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// What the page may do in a browser: only talk to, and load from, its own
/// origin; no frames, no inline scripts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A folder of static files (`index.html`, `web/…`).
#[derive(Debug, Clone)]
pub struct Site {
    root: PathBuf,
}

impl Site {
    /// The files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `request` asks for one of the site's files rather than an rpc.
    pub fn serves<B>(request: &http::Request<B>) -> bool {
        let path = request.uri().path();
        matches!(*request.method(), Method::GET | Method::HEAD)
            && (path == "/" || path == "/index.html" || path.starts_with(PAGE_PREFIX))
    }
}

/// Answers the site's paths from a [`Site`], the JWKS path from the
/// verifier's trusted keys, and everything else from `grpc`.
#[derive(Debug, Clone)]
pub struct WithSite<S> {
    grpc: S,
    site: Option<ServeDir>,
    jwks: Arc<Verifier>,
}

impl<S> WithSite<S> {
    /// `grpc`, with `site`'s files in front of it if any, and the keys of
    /// `jwks` published.
    pub fn new(grpc: S, site: Option<&Site>, jwks: Arc<Verifier>) -> Self {
        Self {
            grpc,
            site: site.map(|s| ServeDir::new(s.root()).append_index_html_on_directories(true)),
            jwks,
        }
    }
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for WithSite<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call is made on a clone, readied there (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if request.method() == Method::GET && request.uri().path() == JWKS_PATH {
            let body = self.jwks.jwks_json();
            let response = http::Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(tonic::body::Body::new(Full(Some(body))))
                .expect("a static response");
            return Box::pin(std::future::ready(Ok(response)));
        }
        match &self.site {
            Some(site) if Site::serves(&request) => {
                let site = site.clone();
                Box::pin(async move {
                    let response = site.oneshot(request).await?;
                    let mut response = response.map(tonic::body::Body::new);
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                    );
                    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    Ok(response)
                })
            }
            _ => Box::pin(self.grpc.clone().oneshot(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_of_the_page_paths_are_the_sites() {
        let request =
            |method: Method, path: &str| http::Request::builder().method(method).uri(path).body(()).unwrap();
        assert!(Site::serves(&request(Method::GET, "/")));
        assert!(Site::serves(&request(Method::GET, "/web/app.js")));
        assert!(Site::serves(&request(Method::HEAD, "/index.html")));
        assert!(!Site::serves(&request(Method::POST, "/")));
        assert!(!Site::serves(&request(Method::POST, "/clinic.patients.v1.PatientService/GetPatient")));
        assert!(!Site::serves(&request(Method::GET, "/clinic.patients.v1.PatientService/GetPatient")));
    }
}
