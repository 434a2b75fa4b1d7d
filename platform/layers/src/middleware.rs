//! One way to write what stands in front of the handlers: a [`Middleware`]
//! is one function of the request and the rest of the stack ([`Next`]), as
//! axum's `middleware::from_fn` is; a process lists its middleware in order
//! and [`Stack`] runs them before its routes.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::Code;
use tower::{Service, ServiceExt};

/// The boxed future every middleware returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request as the middleware see it.
pub type Request = http::Request<tonic::body::Body>;

/// A response as the middleware see it: an rpc's, or a status a middleware
/// answered with.
pub type Response = http::Response<tonic::body::Body>;

/// The routes at the end of the stack: one boxed future per call.
type Endpoint = Arc<dyn Fn(Request) -> BoxFuture<Response> + Send + Sync>;

/// One step in front of the handlers: it answers the request itself (a
/// refusal) or passes it on with [`Next::run`], and may act on the answer.
pub trait Middleware: fmt::Debug + Send + Sync + 'static {
    /// Handles `request`; `next` is the rest of the stack.
    fn call(&self, request: Request, next: Next) -> BoxFuture<Response>;
}

/// The rest of the stack after one middleware.
pub struct Next {
    chain: Arc<[Arc<dyn Middleware>]>,
    at: usize,
    endpoint: Endpoint,
}

impl Next {
    /// Passes `request` on to the next middleware, or to the routes.
    pub fn run(self, request: Request) -> BoxFuture<Response> {
        match self.chain.get(self.at).cloned() {
            Some(middleware) => middleware.call(request, Next { at: self.at + 1, ..self }),
            None => (self.endpoint)(request),
        }
    }
}

/// A process's middleware, outermost first, in front of its routes.
#[derive(Clone)]
pub struct Stack {
    chain: Arc<[Arc<dyn Middleware>]>,
    endpoint: Endpoint,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack").field("chain", &self.chain).finish_non_exhaustive()
    }
}

impl Stack {
    /// `chain` (outermost first) in front of `routes`.
    pub fn new<S>(chain: Vec<Arc<dyn Middleware>>, routes: S) -> Self
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let endpoint: Endpoint = Arc::new(move |request| {
            let routes = routes.clone();
            Box::pin(async move {
                match routes.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
        });
        Self { chain: chain.into(), endpoint }
    }
}

impl<B> Service<http::Request<B>> for Stack
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Infallibly;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The routes are readied per call (`oneshot`), on a clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let next = Next { chain: self.chain.clone(), at: 0, endpoint: self.endpoint.clone() };
        Infallibly(next.run(request.map(tonic::body::Body::new)))
    }
}

/// A stack's answer as a tower service's result, which is never an error
/// (without boxing the future a second time).
pub struct Infallibly(BoxFuture<Response>);

impl Future for Infallibly {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// The gRPC status of a response: in its headers when the call failed
/// before any message (trailers-only); OK otherwise.
pub fn response_code<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// A status as a response (trailers-only), for a middleware that refuses.
pub fn refuse(status: tonic::Status) -> BoxFuture<Response> {
    Box::pin(std::future::ready(status.into_http()))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Notes its name on the way in and out.
    #[derive(Debug)]
    struct Note(&'static str, Arc<Mutex<Vec<String>>>);

    impl Middleware for Note {
        fn call(&self, request: Request, next: Next) -> BoxFuture<Response> {
            let (name, log) = (self.0, self.1.clone());
            log.lock().unwrap().push(format!("in {name}"));
            Box::pin(async move {
                let response = next.run(request).await;
                log.lock().unwrap().push(format!("out {name}"));
                response
            })
        }
    }

    /// Answers every call with PERMISSION_DENIED.
    #[derive(Debug)]
    struct Refuse;

    impl Middleware for Refuse {
        fn call(&self, _: Request, _: Next) -> BoxFuture<Response> {
            refuse(tonic::Status::permission_denied("no"))
        }
    }

    fn routes(
        log: Arc<Mutex<Vec<String>>>,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static {
        tower::service_fn(move |_: Request| {
            log.lock().unwrap().push("routes".to_owned());
            std::future::ready(Ok::<_, Infallible>(Response::new(tonic::body::Body::empty())))
        })
    }

    fn code(response: &Response) -> Option<&str> {
        response.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn middleware_run_in_order_around_the_routes() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain: Vec<Arc<dyn Middleware>> =
            vec![Arc::new(Note("a", log.clone())), Arc::new(Note("b", log.clone()))];
        let mut stack = Stack::new(chain, routes(log.clone()));
        let response = stack.call(http::Request::new(tonic::body::Body::empty())).await.unwrap();
        assert_eq!(code(&response), None);
        assert_eq!(*log.lock().unwrap(), ["in a", "in b", "routes", "out b", "out a"]);
    }

    #[tokio::test]
    async fn a_refusal_never_reaches_what_follows() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain: Vec<Arc<dyn Middleware>> =
            vec![Arc::new(Note("a", log.clone())), Arc::new(Refuse), Arc::new(Note("b", log.clone()))];
        let mut stack = Stack::new(chain, routes(log.clone()));
        let response = stack.call(http::Request::new(tonic::body::Body::empty())).await.unwrap();
        assert_eq!(code(&response), Some("7"));
        assert_eq!(*log.lock().unwrap(), ["in a", "out a"]);
    }
}
