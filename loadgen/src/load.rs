//! The load generator: one rpc at a fixed concurrency for a fixed time over
//! several HTTP/2 connections, with latencies in an HDR histogram.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

/// How hard and how long to drive a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests in flight at any time.
    pub concurrency: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time driven before measuring starts (connections, caches, JIT-free warm-up of pools).
    pub warmup: Duration,
}

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Successful requests per second over the measured time.
    pub rps: f64,
    /// Latency percentiles and maximum of successful requests, in ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Failed requests by gRPC status code.
    pub errors: BTreeMap<String, u64>,
}

impl Outcome {
    /// All failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// `connections` separate connections to `uri`.
pub async fn connect(uri: &str, connections: usize) -> Result<Vec<Channel>, tonic::transport::Error> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(Endpoint::from_shared(uri.to_owned())?.tcp_nodelay(true).connect().await?);
    }
    Ok(channels)
}

/// Drives `call(channel, worker, sequence)` per `load` and measures it; the
/// workers share `channels` (separate HTTP/2 connections) round-robin.
pub async fn run<F, Fut>(name: &str, channels: &[Channel], load: Load, call: F) -> Outcome
where
    F: Fn(Channel, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let workers: Vec<_> = (0..load.concurrency)
        .map(|worker| {
            let channel = channels[worker % channels.len()].clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut sequence = 0u64;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let result = call(channel.clone(), worker, sequence).await;
                    sequence += 1;
                    if sent < measure_from {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            let micros = sent.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                            histogram.record(micros).expect("within bounds");
                        }
                        Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                    }
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = BTreeMap::new();
    for worker in workers {
        let (h, e) = worker.await.expect("worker");
        histogram.add(h).expect("same bounds");
        for (code, n) in e {
            *errors.entry(code).or_default() += n;
        }
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Outcome {
        name: name.to_owned(),
        rps: histogram.len() as f64 / load.duration.as_secs_f64(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        errors,
    }
}

/// The position a worker asks for on its `seq`-th call, spread over
/// `0..n` so concurrent workers read different rows.
pub fn spread(worker: usize, seq: u64, n: u64) -> u64 {
    seq.wrapping_mul(2_654_435_761).wrapping_add(worker as u64 * 97) % n.max(1)
}

/// GetPatient `id`, as the holder of `bearer`.
pub async fn get_patient(channel: Channel, bearer: Arc<str>, id: i64) -> Result<(), tonic::Status> {
    use clinic_proto::patients::v1::{GetPatientRequest, patient_service_client::PatientServiceClient};
    PatientServiceClient::new(clinic_dev_keys::bearer::authed(channel, &bearer))
        .get_patient(GetPatientRequest { id, ..Default::default() })
        .await
        .map(|_| ())
}
