//! Tower layers in front of every rpc: one tracing span per call, and the
//! caller's deadline enforced as `DEADLINE_EXCEEDED`.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::deadline::{Deadline, parse_grpc_timeout};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Logs every rpc in its own span with its method, status code and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;
    fn layer(&self, inner: S) -> RpcTrace<S> {
        RpcTrace { inner }
    }
}

/// The service made by [`RpcTraceLayer`].
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!("rpc", method = %req.uri().path());
        let start = Instant::now();
        let response = self.inner.call(req);
        Box::pin(
            async move {
                let result = response.await;
                let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(res) => {
                        // Unary errors travel as trailers-only responses, so
                        // their status is in the headers; no status there
                        // means the call succeeded.
                        let code = res
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map_or(Code::Ok, Code::from_i32);
                        match code {
                            Code::Ok
                            | Code::NotFound
                            | Code::InvalidArgument
                            | Code::AlreadyExists
                            | Code::Aborted
                            | Code::FailedPrecondition => {
                                tracing::info!(code = ?code, latency_ms, "rpc finished")
                            }
                            _ => tracing::warn!(code = ?code, latency_ms, "rpc failed"),
                        }
                    }
                    Err(_) => tracing::warn!(latency_ms, "rpc transport error"),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Enforces each call's deadline: the `grpc-timeout` the caller sent, capped
/// by the server's own ceiling. When it passes, the handler's work is dropped
/// (abandoned) and the caller gets `DEADLINE_EXCEEDED`.
///
/// tonic's built-in timeout answers `CANCELLED`, which tells a client the
/// wrong story, hence this layer.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    ceiling: Duration,
}

impl DeadlineLayer {
    /// Caps every call at `ceiling`, whatever the caller asked for.
    pub fn new(ceiling: Duration) -> Self {
        Self { ceiling }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService { inner, ceiling: self.ceiling }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    ceiling: Duration,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DeadlineService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let budget = req
            .headers_mut()
            .remove("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.to_str().ok()?))
            .map_or(self.ceiling, |asked| asked.min(self.ceiling));
        req.extensions_mut().insert(Deadline(Instant::now() + budget));
        let response = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(budget, response).await {
                Ok(result) => result,
                Err(_) => Ok(crate::errors::with_reason(
                    Code::DeadlineExceeded,
                    format!("the deadline of {} ms passed before the call completed", budget.as_millis()),
                    crate::errors::DEADLINE_EXCEEDED,
                )
                .into_http()),
            }
        })
    }
}
