//! Public HTTP routes a port answers before any gRPC layer runs: the JWKS
//! the process trusts (every process), and whatever else a process adds
//! (the gateway's page). They hold no data, so they need no token; every
//! other path goes to the gRPC stack and its authentication as usual.
//!
//! `GET /.well-known/jwks.json` answers the keys the process trusts now
//! (the last good version of its JWKS file, usable keys only): Envoy fetches
//! it from the gateway every few seconds, so a key added to or removed from
//! the file reaches the edge without a restart, and a broken file never does.

use std::{
    convert::Infallible,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use clinic_auth::Verifier;
use clinic_layers::BoxFuture;
use http::{Method, header};
use http_body_util::Full;
use tower::{Service, ServiceExt};

/// Where the trusted JWKS is published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A public route: answered without a token, before any gRPC layer.
pub trait PublicRoute: fmt::Debug + Send + Sync {
    /// Whether this route answers `request`.
    fn serves(&self, request: &http::request::Parts) -> bool;

    /// The answer to `request`, whose body a route may read (the FHIR
    /// endpoint's resources) or leave.
    fn answer(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> BoxFuture<http::Response<tonic::body::Body>>;
}

/// `GET /.well-known/jwks.json`: the keys `verifier` trusts now.
#[derive(Debug)]
pub struct JwksRoute(pub Arc<Verifier>);

impl PublicRoute for JwksRoute {
    fn serves(&self, request: &http::request::Parts) -> bool {
        request.method == Method::GET && request.uri.path() == JWKS_PATH
    }

    fn answer(&self, _: http::Request<tonic::body::Body>) -> BoxFuture<http::Response<tonic::body::Body>> {
        let response = http::Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(tonic::body::Body::new(Full::new(self.0.jwks_json())))
            .expect("a static response");
        Box::pin(std::future::ready(response))
    }
}

/// Answers `routes` first, and everything else from `grpc`.
#[derive(Debug, Clone)]
pub struct WithPublicRoutes<S> {
    grpc: S,
    routes: Arc<[Arc<dyn PublicRoute>]>,
}

impl<S> WithPublicRoutes<S> {
    /// `grpc`, with `routes` in front of it.
    pub fn new(grpc: S, routes: Vec<Arc<dyn PublicRoute>>) -> Self {
        Self { grpc, routes: routes.into() }
    }
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for WithPublicRoutes<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call is made on a clone, readied there (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        match self.routes.iter().find(|route| route.serves(&parts)) {
            Some(route) => {
                let answer = route.answer(http::Request::from_parts(parts, tonic::body::Body::new(body)));
                Box::pin(async move { Ok(answer.await) })
            }
            None => Box::pin(self.grpc.clone().oneshot(http::Request::from_parts(parts, body))),
        }
    }
}
