//! Calling another Clinic service: one reused channel per peer, the caller's
//! remaining deadline carried onto every downstream call, and one way to turn
//! a downstream failure into the caller's error (`clinic_core::downstream::DownstreamExt`).
//!
//! # Layout
//! One file: the settings ([`DownstreamSettings`], [`ServiceTokenSettings`]),
//! channels that re-resolve every replica ([`peer_channel`]), the service's
//! own token ([`ServiceToken`]), [`PeerClient`] (deadline, token, retried
//! reads) and [`Observed`] (the span and metrics of every outgoing call).
//! How a failed call is reported lives in `clinic_core::downstream`.

use std::{
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tonic::{
    Code, Request, Response, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use clinic_core::{
    context::{self, Call},
    deadline::Deadline,
    defaults,
    downstream::{Failure, Peer, classify},
    settings::millis,
};

/// How long any downstream call may wait, whatever the caller's deadline,
/// and how other services are reached.
#[derive(Debug, Clone, clap::Args)]
pub struct DownstreamSettings {
    /// Longest wait for another service, in milliseconds, whatever the
    /// caller's deadline.
    #[arg(long = "downstream-timeout-ms", env = "DOWNSTREAM_TIMEOUT_MS", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub timeout: Duration,
    /// The CA that signed the other services' certificates: peers at an
    /// `https://` address are called over TLS and must present a certificate
    /// it signed for their host name. Unset: `https://` peers are refused.
    #[arg(long = "peer-tls-ca-file", env = "PEER_TLS_CA_FILE", value_name = "PATH")]
    pub peer_tls_ca_file: Option<PathBuf>,
    /// This service's own certificate (PEM), presented to peers that require
    /// one (mutual TLS, their TLS_CLIENT_CA_FILE).
    #[arg(long = "peer-tls-cert-file", env = "PEER_TLS_CERT_FILE", value_name = "PATH", requires_all = ["peer_tls_key_file", "peer_tls_ca_file"])]
    pub peer_tls_cert_file: Option<PathBuf>,
    /// The private key of PEER_TLS_CERT_FILE (PEM).
    #[arg(
        long = "peer-tls-key-file",
        env = "PEER_TLS_KEY_FILE",
        value_name = "PATH",
        requires = "peer_tls_cert_file"
    )]
    pub peer_tls_key_file: Option<PathBuf>,
}

impl DownstreamSettings {
    /// Settings with `timeout` and plaintext peers.
    pub fn plaintext(timeout: Duration) -> Self {
        Self { timeout, peer_tls_ca_file: None, peer_tls_cert_file: None, peer_tls_key_file: None }
    }

    /// The TLS of calls to `https://` peers, if configured.
    pub fn tls(&self) -> Result<Option<ClientTlsConfig>, clinic_tls::TlsError> {
        let Some(ca) = &self.peer_tls_ca_file else { return Ok(None) };
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|error| clinic_tls::TlsError::Read { path: path.display().to_string(), error })
        };
        clinic_tls::certificates(ca)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.peer_tls_cert_file, &self.peer_tls_key_file) {
            clinic_tls::certificates(cert)?;
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(config))
    }
}

/// The service's own token, for calls no person is behind.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceTokenSettings {
    /// A file holding the service's own bearer token (role `service`), read
    /// again when it changes; unset: such calls carry no token.
    #[arg(long = "service-token-file", env = "SERVICE_TOKEN_FILE", value_name = "PATH")]
    pub service_token_file: Option<PathBuf>,
}

impl ServiceTokenSettings {
    /// The token source, if configured.
    pub fn token(&self) -> Option<Arc<ServiceToken>> {
        self.service_token_file.clone().map(ServiceToken::new)
    }
}

/// Where patients-service is, for the processes that call it.
#[derive(Debug, Clone, clap::Args)]
pub struct PatientsPeer {
    /// patients-service's address (`http://host:port`).
    #[arg(long = "patients-addr", env = "PATIENTS_ADDR", value_name = "URI", default_value_t = defaults::uri(defaults::PATIENTS_PORT))]
    pub patients_addr: String,
}

/// Where studies-service is, for the processes that call it.
#[derive(Debug, Clone, clap::Args)]
pub struct StudiesPeer {
    /// studies-service's address (`http://host:port`).
    #[arg(long = "studies-addr", env = "STUDIES_ADDR", value_name = "URI", default_value_t = defaults::uri(defaults::STUDIES_PORT))]
    pub studies_addr: String,
}

/// A lazily connecting channel to `uri` (`http://host:port`), shared by all
/// calls to that peer: connects on first use, reconnects by itself, and fails
/// fast (UNAVAILABLE) while the peer is down.
pub fn channel(uri: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(uri.to_owned(), None, None)?.connect_lazy())
}

/// The endpoint at `uri`; over TLS (verified for `host`, the name the
/// address was given by) when `uri` is `https://` and `tls` is set.
fn endpoint(
    uri: String,
    tls: Option<&ClientTlsConfig>,
    host: Option<&str>,
) -> Result<Endpoint, tonic::transport::Error> {
    let secure = uri.starts_with("https://");
    let mut endpoint = Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let (true, Some(tls)) = (secure, tls) {
        let mut tls = tls.clone();
        if let Some(host) = host {
            tls = tls.domain_name(host.trim_matches(['[', ']']));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint)
}

/// How often a peer's host names are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// A channel to every replica of a peer, balancing each call (not each
/// connection) among them. `addrs` is one or more `http://host:port` (or
/// `https://`, with `tls`), comma-separated; host names are resolved now and
/// every few seconds, so a Kubernetes headless Service (one address per
/// ready pod) or a compose service spreads calls over all replicas and
/// follows them as they come and go. A single IP address needs no balancing
/// and gets a plain channel.
pub fn peer_channel(addrs: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, tonic::transport::Error> {
    let parts: Vec<&str> = addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    // Every address checked once, so a typo fails at start-up.
    for part in &parts {
        endpoint((*part).to_owned(), tls, None)?;
    }
    let uris: Vec<http::Uri> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    let fixed_ip = |u: &http::Uri| {
        u.host().is_some_and(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok())
    };
    if uris.len() == 1 && fixed_ip(&uris[0]) {
        return Ok(endpoint(uris[0].to_string(), tls, uris[0].host())?.connect_lazy());
    }
    let tls = tls.cloned();
    let (channel, changes) = Channel::balance_channel::<String>(64);
    tokio::spawn(async move {
        let mut known = std::collections::HashMap::new();
        let mut ticker = tokio::time::interval(RESOLVE_INTERVAL);
        loop {
            ticker.tick().await;
            let mut now = std::collections::HashMap::new();
            for uri in &uris {
                let (Some(host), port) = (uri.host(), uri.port_u16().unwrap_or(80)) else { continue };
                match tokio::net::lookup_host((host.trim_matches(['[', ']']), port)).await {
                    Ok(addrs) => {
                        now.extend(addrs.map(|a| {
                            (format!("{}://{a}", uri.scheme_str().unwrap_or("http")), host.to_owned())
                        }))
                    }
                    // Keep what was known for this host: a resolver hiccup
                    // must not empty the pool.
                    Err(e) => {
                        tracing::warn!(error = %e, %host, "resolving a peer failed; keeping its known addresses");
                        now.extend(known.iter().map(|(a, h): (&String, &String)| (a.clone(), h.clone())));
                    }
                }
            }
            for gone in known.keys().filter(|a| !now.contains_key(*a)) {
                if changes.send(tonic::transport::channel::Change::Remove(gone.clone())).await.is_err() {
                    return;
                }
            }
            for (new, host) in now.iter().filter(|(a, _)| !known.contains_key(*a)) {
                if let Ok(e) = endpoint(new.clone(), tls.as_ref(), Some(host))
                    && changes.send(tonic::transport::channel::Change::Insert(new.clone(), e)).await.is_err()
                {
                    return;
                }
            }
            known = now;
        }
    });
    Ok(channel)
}

/// The token a service presents when no person is behind its call (the
/// cascade's polling): read from a file and read again when the file
/// changes, as Kubernetes rotates projected service-account tokens.
#[derive(Debug)]
pub struct ServiceToken {
    path: PathBuf,
    cached: Mutex<CachedFile>,
}

/// What was last read of a file, and when it was last looked at.
#[derive(Debug, Default)]
struct CachedFile {
    stamp: Option<(SystemTime, u64)>,
    contents: Option<String>,
    checked: Option<Instant>,
}

impl ServiceToken {
    /// The token in the file at `path`.
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Self { path, cached: Mutex::new(CachedFile::default()) })
    }

    /// The current token (the file is looked at again at most once a second).
    pub fn get(&self) -> Option<String> {
        let mut cached = self.cached.lock().expect("service token lock");
        if cached.checked.is_none_or(|checked| checked.elapsed() >= Duration::from_secs(1)) {
            cached.checked = Some(Instant::now());
            let stamp = std::fs::metadata(&self.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            if stamp != cached.stamp {
                cached.contents = std::fs::read_to_string(&self.path).ok().map(|t| t.trim().to_owned());
                cached.stamp = stamp;
            }
        }
        cached.contents.clone()
    }
}

/// Tries a read makes of a peer that was unreachable, at most.
pub const READ_ATTEMPTS: u32 = 3;

/// Why a client of another service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Its address is not a valid URI.
    #[error("the address of another service: {0}")]
    Address(#[from] tonic::transport::Error),
    /// The TLS settings of calls to other services cannot be used.
    #[error("TLS of calls to other services: {0}")]
    Tls(#[from] clinic_tls::TlsError),
}

/// One peer service: its lazily connecting channel and the ceiling on every
/// call to it. Every call between services is made through one, and carries
/// the caller's token and request id (or the service's own token when no
/// person is behind the call).
#[derive(Debug, Clone)]
pub struct PeerClient {
    peer: Peer,
    channel: Observed,
    ceiling: Duration,
    service_token: Option<Arc<ServiceToken>>,
}

impl PeerClient {
    /// A client of `peer` at `uri`, waiting at most `settings.timeout` per call.
    pub fn new(peer: Peer, uri: &str, settings: &DownstreamSettings) -> Result<Self, PeerError> {
        let tls = settings.tls()?;
        Ok(Self {
            peer,
            channel: Observed { inner: peer_channel(uri, tls.as_ref())? },
            ceiling: settings.timeout,
            service_token: None,
        })
    }

    /// The same client, presenting `token` on calls made outside any rpc.
    pub fn with_service_token(self, token: Option<Arc<ServiceToken>>) -> Self {
        Self { service_token: token, ..self }
    }

    /// Whom this client calls.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The channel, for a generated client: every call through it carries
    /// the current trace context and is counted in the `grpc_client_*`
    /// metrics.
    pub fn channel(&self) -> Observed {
        self.channel.clone()
    }

    /// The bare channel, for long-lived streams (health `Watch`) that
    /// per-call metrics do not fit.
    pub fn raw_channel(&self) -> Channel {
        self.channel.inner.clone()
    }

    /// Calls `call` with a request of `message` (see [`Self::request`]); as
    /// a read may be repeated, one that found its peer unreachable (a
    /// replica that went away between the balancer's pick and the call, or
    /// during it) is made again, up to [`READ_ATTEMPTS`] times in all with a
    /// short pause between, within the caller's deadline: the balancer sends
    /// each try to a replica that is up (during a rolling restart one may go
    /// down right after another came back).
    pub async fn read<M, T, F, Fut>(
        &self,
        message: M,
        on_behalf: &Call,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        M: Clone,
        F: Fn(Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let (mut pause, mut attempt, deadline) = (Duration::from_millis(20), 1, on_behalf.deadline());
        loop {
            match call(self.request(message.clone(), on_behalf)).await {
                Err(status)
                    if classify(&status) == Failure::Unavailable
                        && attempt < READ_ATTEMPTS
                        && deadline.is_none_or(|d| d.remaining() > pause * 2) =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    /// A request to the peer made on behalf of `call`: carrying what is
    /// left of its deadline (never more than the ceiling), its caller's token
    /// and its request id - or, for background work (no caller), the
    /// service's own token.
    pub fn request<T>(&self, message: T, call: &Call) -> Request<T> {
        let mut request = request(message, call.deadline(), self.ceiling);
        let token = match call.identity() {
            Some(identity) => Some(identity.token.to_string()),
            None => self.service_token.as_ref().and_then(|t| t.get()),
        };
        let request_id = call.request_id.clone();
        let headers = request.metadata_mut();
        if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
            headers.insert("authorization", value);
        }
        if let Ok(value) = request_id.parse() {
            headers.insert("x-request-id", value);
        }
        request
    }
}

/// A channel to a peer that writes the current span's W3C `traceparent` on
/// every call and records `grpc_client_started_total`,
/// `grpc_client_handled_total` (with the code, read from the trailers) and
/// `grpc_client_handling_seconds`.
#[derive(Debug, Clone)]
pub struct Observed {
    inner: Channel,
}

/// Writes trace context into request headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// What a call's outcome is recorded under, once known.
#[derive(Debug)]
struct Pending {
    labels: [(&'static str, String); 3],
    start: Instant,
}

impl Pending {
    fn finish(self, code: Code) {
        let mut handled = self.labels.to_vec();
        handled.push(("grpc_code", clinic_core::errors::code_label(code).to_owned()));
        metrics::counter!("grpc_client_handled_total", &handled).increment(1);
        metrics::histogram!("grpc_client_handling_seconds", &self.labels)
            .record(self.start.elapsed().as_secs_f64());
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

pin_project_lite::pin_project! {
    /// A response body that records the call's outcome when its trailers
    /// (or its end) arrive.
    pub struct ObservedBody {
        #[pin]
        inner: tonic::body::Body,
        pending: Option<Pending>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.finish(Code::Cancelled);
            }
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) if f.is_trailers() => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(f.trailers_ref().and_then(grpc_status).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(Code::Unavailable);
                }
            }
            None => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(Code::Unknown);
                }
            }
            Some(Ok(_)) => {}
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Observed {
    type Response = http::Response<ObservedBody>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(request.headers_mut()))
        });
        let (service, method) = context::split_path(request.uri().path());
        let labels = [("grpc_type", "unary".to_owned()), ("grpc_service", service), ("grpc_method", method)];
        metrics::counter!("grpc_client_started_total", &labels).increment(1);
        let pending = Pending { labels, start: Instant::now() };
        let call = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            match call.await {
                Ok(response) => match grpc_status(response.headers()) {
                    Some(code) => {
                        pending.finish(code);
                        Ok(response.map(|inner| ObservedBody { inner, pending: None }))
                    }
                    None => Ok(response.map(|inner| ObservedBody { inner, pending: Some(pending) })),
                },
                Err(e) => {
                    pending.finish(Code::Unavailable);
                    Err(e)
                }
            }
        })
    }
}

/// A downstream request whose timeout is what is left of the caller's
/// `deadline`, never more than `ceiling`.
pub fn request<T>(message: T, deadline: Option<Deadline>, ceiling: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline.map_or(ceiling, |d| d.remaining().min(ceiling)));
    request
}

#[cfg(test)]
mod tests {
    use clinic_core::downstream::DownstreamExt;
    use std::time::Instant;

    use tonic_types::StatusExt;

    use super::*;

    fn timeout_header(request: &Request<()>) -> Duration {
        let value = request.metadata().get("grpc-timeout").expect("a grpc-timeout").to_str().unwrap();
        clinic_core::deadline::parse_grpc_timeout(value).expect("a valid grpc-timeout")
    }

    #[test]
    fn a_downstream_call_gets_what_is_left_of_the_callers_deadline() {
        let deadline = Deadline(Instant::now() + Duration::from_millis(300));
        let sent = timeout_header(&request((), Some(deadline), Duration::from_secs(5)));
        assert!(sent <= Duration::from_millis(300) && sent > Duration::from_millis(200), "{sent:?}");
    }

    #[test]
    fn a_downstream_call_never_waits_longer_than_the_ceiling() {
        let far = Deadline(Instant::now() + Duration::from_secs(60));
        assert_eq!(timeout_header(&request((), Some(far), Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(timeout_header(&request((), None, Duration::from_secs(5))), Duration::from_secs(5));
    }

    /// A peer that sends the headers and the first bytes of an answer, then
    /// drops the connection: a replica killed mid-answer.
    async fn peer_dying_mid_answer() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                    let Some(Ok((_, mut respond))) = connection.accept().await else { return };
                    let head = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut body = respond.send_response(head, false).unwrap();
                    // A message frame announcing 100 bytes, then only 3 of them.
                    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3]), false).unwrap();
                    // Flush what was sent, then drop the socket without a GOAWAY.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        std::future::poll_fn(|cx| connection.poll_closed(cx)),
                    )
                    .await;
                });
            }
        });
        addr
    }

    /// Seen in a scale-out run: a replica killed while its answer's body was
    /// on the wire reached the gateway's caller as INTERNAL ("h2 protocol
    /// error: error reading a body from connection").
    #[tokio::test]
    async fn a_peer_dying_while_its_answer_is_read_is_unavailable_never_internal() {
        use clinic_proto::patients::v1::{GetPatientRequest, patient_service_client::PatientServiceClient};
        let addr = peer_dying_mid_answer().await;
        let settings = DownstreamSettings::plaintext(Duration::from_secs(5));
        let peer = PeerClient::new(Peer::Patients, &format!("http://{addr}"), &settings).unwrap();
        let client = PatientServiceClient::new(peer.channel());
        let status = peer
            .read(
                GetPatientRequest { id: 1, ..Default::default() },
                &context::CallContext::background("test"),
                |request| async { client.clone().get_patient(request).await },
            )
            .await
            .unwrap_err();
        assert_eq!(classify(&status), Failure::Unavailable, "{status:?}");
        let reported: Status = Err::<Response<()>, _>(status)
            .downstream(Peer::Patients, "reading a patient")
            .unwrap_err()
            .into();
        assert_eq!(reported.code(), Code::Unavailable);
        assert_eq!(reported.get_details_error_info().unwrap().reason, "PATIENTS_SERVICE_UNAVAILABLE");
    }
}
