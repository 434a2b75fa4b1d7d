//! The system's health, as seen through Envoy.
//!
//! Envoy routes `grpc.health.v1.Health/Check` by path, so every health check
//! through the front door lands here whatever service it names. The gateway
//! therefore mirrors each downstream service's own health under that
//! service's name (following its `Watch` stream), reports its own, and
//! answers the empty name with SERVING only when every service is; so does
//! it for the audit trail, which it answers from every service.

use std::{collections::HashMap, sync::Arc, time::Duration};

use clinic_host::health::Health;
use tokio::{sync::Mutex, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Pause before watching a downstream service again after its stream ended.
const RETRY: Duration = Duration::from_millis(500);

/// Starts one mirroring task per `(service name, channel)`; `own` is the
/// gateway's own service name, SERVING while the gateway runs; `whole`
/// names what needs every downstream service (SERVING when all are).
pub async fn spawn_mirrors(
    health: Health,
    own: &'static str,
    whole: &'static [&'static str],
    downstream: Vec<(&'static str, Channel)>,
) -> Vec<JoinHandle<()>> {
    health.set_service(own, true).await;
    let state: Arc<Mutex<HashMap<&'static str, bool>>> =
        Arc::new(Mutex::new(downstream.iter().map(|(name, _)| (*name, false)).collect()));
    downstream
        .into_iter()
        .map(|(name, channel)| {
            let (health, state) = (health.clone(), state.clone());
            tokio::spawn(async move {
                loop {
                    let watch = clinic_core::bounded!(HealthClient::new(channel.clone()))
                        .watch(HealthCheckRequest { service: name.to_owned() })
                        .await;
                    if let Ok(response) = watch {
                        let mut stream = response.into_inner();
                        while let Ok(Some(update)) = stream.message().await {
                            record(&health, &state, whole, name, update.status() == ServingStatus::Serving)
                                .await;
                        }
                    }
                    record(&health, &state, whole, name, false).await;
                    tokio::time::sleep(RETRY).await;
                }
            })
        })
        .collect()
}

async fn record(
    health: &Health,
    state: &Mutex<HashMap<&'static str, bool>>,
    whole: &[&'static str],
    name: &'static str,
    serving: bool,
) {
    let mut state = state.lock().await;
    if state.insert(name, serving) == Some(serving) {
        return;
    }
    health.set_service(name, serving).await;
    let all = state.values().all(|s| *s);
    for name in whole.iter().copied().chain([""]) {
        health.set_service(name, all).await;
    }
    tracing::info!(service = name, serving, system_serving = all, "downstream health changed");
}
