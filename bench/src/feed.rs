//! The `change_feed` scenario: ten watchers of the patients' change feed
//! through Envoy while writers create patients at full speed. It reports
//! the writes per second, how long a change takes from its write to each
//! watcher (p50, p99, max), and every change counted: none lost, none
//! delivered twice.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clinic_dev_keys::bearer::authed;
use clinic_devstack::credentials::DevCredentials;
use clinic_proto::patients::v1::{
    ListPatientChangesRequest, WatchPatientChangesRequest, patient_service_client::PatientServiceClient,
};
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::Channel;

use crate::{load::Outcome, scenarios::Scenarios};

/// Watchers following the feed during the scenario.
pub const WATCHERS: usize = 10;

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct FeedOutcome {
    /// The writers' CreatePatient load.
    pub writes: Outcome,
    /// Changes each watcher was expected to receive.
    pub expected: u64,
    /// Changes received, over all watchers.
    pub delivered: u64,
    /// From the write (its transaction's time) to a watcher, in ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Expected changes some watcher never received, over all watchers.
    pub lost: u64,
    /// Changes a watcher received more than once, over all watchers.
    pub duplicated: u64,
    /// Watch streams that ended with an error.
    pub stream_errors: u64,
}

impl FeedOutcome {
    /// The scenario's part of the JSON report.
    pub fn report(&self) -> serde_json::Value {
        json!({
            "watchers": WATCHERS,
            "writes_per_second": self.writes.rps,
            "write_errors": self.writes.error_count(),
            "expected_per_watcher": self.expected,
            "delivered": self.delivered,
            "commit_to_delivery_ms": {"p50": self.p50_ms, "p99": self.p99_ms, "max": self.max_ms},
            "lost": self.lost,
            "duplicated": self.duplicated,
            "stream_errors": self.stream_errors,
        })
    }
}

/// What one watcher received: each change's sequence, and its latency in µs.
struct Received {
    sequences: Vec<i64>,
    latencies: Histogram<u64>,
    failed: Option<String>,
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Follows the feed through `channel` from `after` until it has seen
/// `until` (set once the writers are done).
async fn follow(channel: Channel, token: Arc<str>, after: i64, until: Arc<AtomicI64>) -> Received {
    let mut received = Received {
        sequences: Vec::new(),
        latencies: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
        failed: None,
    };
    let mut client = PatientServiceClient::new(authed(channel, &token));
    let mut stream =
        match client.watch_patient_changes(WatchPatientChangesRequest { after_sequence: after }).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                received.failed = Some(format!("{:?}: {}", status.code(), status.message()));
                return received;
            }
        };
    let mut last = after;
    while last < until.load(Ordering::Acquire) {
        match stream.message().await {
            Ok(Some(message)) => {
                let arrived = now_micros();
                for change in message.changes {
                    last = change.sequence;
                    received.sequences.push(change.sequence);
                    if let Some(written) = change.patient.and_then(|p| p.update_time) {
                        let written = written.seconds * 1_000_000 + i64::from(written.nanos) / 1_000;
                        let _ = received.latencies.record((arrived - written).clamp(1, 600_000_000) as u64);
                    }
                }
            }
            Ok(None) => {
                received.failed = Some("ended without a status".into());
                break;
            }
            Err(status) => {
                received.failed = Some(format!("{:?}: {}", status.code(), status.message()));
                break;
            }
        }
    }
    received
}

/// Runs the scenario: [`WATCHERS`] watchers on `envoy`, each with a
/// `service` token of its own, and the writers of
/// [`Scenarios::create_patient`] meanwhile.
pub async fn run(
    scenarios: &mut Scenarios,
    envoy: &[Channel],
    credentials: &DevCredentials,
) -> Result<FeedOutcome, Box<dyn std::error::Error>> {
    // Each watcher is a consumer of its own (a service following Clinic).
    let mut tokens: Vec<Arc<str>> = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        tokens.push(
            credentials
                .token(&format!("bench-feed-{i}"), &["service"], Duration::from_secs(4 * 3600))?
                .into(),
        );
    }
    let token = tokens[0].clone();
    let head = |token: Arc<str>| {
        let channel = envoy[0].clone();
        async move {
            let request = ListPatientChangesRequest { after_sequence: 0, page_size: 1 };
            let page =
                PatientServiceClient::new(authed(channel, &token)).list_patient_changes(request).await?;
            Ok::<_, tonic::Status>(page.into_inner().head_sequence)
        }
    };
    let start = head(token.clone()).await?;
    let until = Arc::new(AtomicI64::new(i64::MAX));
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|i| {
            tokio::spawn(follow(envoy[i % envoy.len()].clone(), tokens[i].clone(), start, until.clone()))
        })
        .collect();
    let writes = scenarios.create_patient("change_feed_writes", rand::random::<u32>()).await;
    // The last writes are numbered a few milliseconds after their commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = head(token.clone()).await?;
    until.store(end, Ordering::Release);
    let expected: BTreeSet<i64> = (start + 1..=end).collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let (mut delivered, mut lost, mut duplicated, mut stream_errors) = (0, 0, 0, 0);
    for watcher in watchers {
        let received = tokio::time::timeout(Duration::from_secs(60), watcher).await??;
        latencies.add(&received.latencies).expect("same bounds");
        if let Some(failure) = received.failed {
            eprintln!("a watch stream failed: {failure}");
            stream_errors += 1;
        }
        let within: Vec<i64> = received.sequences.into_iter().filter(|s| *s <= end).collect();
        let distinct: BTreeSet<i64> = within.iter().copied().collect();
        delivered += within.len() as u64;
        duplicated += (within.len() - distinct.len()) as u64;
        lost += expected.difference(&distinct).count() as u64;
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(FeedOutcome {
        writes,
        expected: expected.len() as u64,
        delivered,
        p50_ms: ms(latencies.value_at_quantile(0.50)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        max_ms: ms(latencies.max()),
        lost,
        duplicated,
        stream_errors,
    })
}
