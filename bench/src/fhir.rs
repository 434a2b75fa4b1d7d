//! The FHIR scenarios: read and search through Envoy as FHIR clients call
//! (HTTP/1.1, kept-alive connections, JSON), next to their gRPC
//! equivalents through the same Envoy in the same run.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tonic::transport::Channel;

use crate::{
    load::{self, Outcome},
    scenarios::Scenarios,
};

/// A kept-alive HTTP/1.1 client.
type Http = Client<HttpConnector, Empty<Bytes>>;

/// GET `uri` as the holder of `bearer`, reading the whole answer; a non-2xx
/// answer is an error named after its gRPC equivalent.
async fn get(http: Http, uri: String, bearer: Arc<str>) -> Result<(), tonic::Status> {
    let request = http::Request::get(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {bearer}"))
        .header(http::header::ACCEPT, "application/fhir+json")
        .body(Empty::new())
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let response = http.request(request).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let status = response.status();
    response.into_body().collect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    match status.as_u16() {
        200..=299 => Ok(()),
        429 => Err(tonic::Status::resource_exhausted("429")),
        503 => Err(tonic::Status::unavailable("503")),
        504 => Err(tonic::Status::deadline_exceeded("504")),
        other => Err(tonic::Status::unknown(format!("HTTP {other}"))),
    }
}

fn client() -> Http {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build_http()
}

/// `GET /fhir/Patient/{id}` of patients spread over the table, through
/// Envoy at `envoy_port` (the gRPC channels only pace the workers).
pub async fn read(scenarios: &mut Scenarios, channels: &[Channel], envoy_port: u16) -> Outcome {
    let (http, bearers, n, load) =
        (client(), scenarios.bearers.clone(), scenarios.patients.max(1), scenarios.load);
    let call = move |_: Channel, worker, seq| {
        let id = 1 + load::spread(worker, seq, n);
        get(http.clone(), format!("http://127.0.0.1:{envoy_port}/fhir/Patient/{id}"), bearers.of(worker))
    };
    scenarios.run("fhir_read_envoy", channels, load, call).await
}

/// `GET /fhir/Patient?family=gar&_count=50` through Envoy: the FHIR form of
/// the gRPC `search_name_prefix_envoy`.
pub async fn search(scenarios: &mut Scenarios, channels: &[Channel], envoy_port: u16) -> Outcome {
    let (http, bearers, load) = (client(), scenarios.bearers.clone(), scenarios.load);
    let call = move |_: Channel, worker, _| {
        get(
            http.clone(),
            format!("http://127.0.0.1:{envoy_port}/fhir/Patient?family=gar&_count=50"),
            bearers.of(worker),
        )
    };
    scenarios.run("fhir_search_envoy", channels, load, call).await
}
