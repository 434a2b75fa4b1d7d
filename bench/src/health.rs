//! Watching health while a scenario runs: every non-SERVING update any
//! watched process sends is counted.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::task::JoinHandle;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Health watchers of several processes.
pub struct Watchers {
    not_serving: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

/// Watches the whole-process health of each of `ports` (127.0.0.1).
pub fn watch(ports: &[u16]) -> Watchers {
    let not_serving = Arc::new(AtomicU64::new(0));
    let tasks = ports
        .iter()
        .map(|port| {
            let (port, not_serving) = (*port, not_serving.clone());
            tokio::spawn(async move {
                let uri = clinic_core::defaults::uri(port);
                let Ok(channel) = clinic_client::channel(&uri) else { return };
                let Ok(stream) =
                    HealthClient::new(channel).watch(HealthCheckRequest { service: String::new() }).await
                else {
                    not_serving.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut stream = stream.into_inner();
                while let Ok(Some(update)) = stream.message().await {
                    if update.status() != ServingStatus::Serving {
                        not_serving.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    Watchers { not_serving, tasks }
}

impl Watchers {
    /// Stops watching; how many non-SERVING updates were seen.
    pub async fn stop(self) -> u64 {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.not_serving.load(Ordering::Relaxed)
    }
}
