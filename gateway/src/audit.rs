//! One audit trail through Envoy: AuditService answered for both services;
//! and the gateway's own rpcs recorded in patients-service's trail
//! ([`IntakeSink`]), since the gateway holds no data of its own.
//!
//! Each service keeps the events of its own data. For a page the gateway
//! asks both for a page with the same filters, merges them newest first, and
//! keeps how far it got in each: its page token holds each service's own
//! token (which that service signed, bound to the filters) and the moment
//! the walk began, so events recorded during the walk cannot shift it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use clinic_audit::audit::AuditFilter;
use clinic_audit::audit::{AuditSink, Event};
use clinic_client::PeerClient;
use clinic_core::{
    context::{Call, CallContext},
    downstream::DownstreamExt,
    resource::timestamp,
};
use clinic_pg::api_error::ApiError;
use clinic_proto::audit::{
    intake::v1 as intake,
    v1::{self as pb, audit_service_client::AuditServiceClient},
};
use tonic::{Request, Response, Status};

use crate::{downstream::Downstream, error::Error};

/// Where a walk over both trails stands.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// Only events before this instant (microseconds since the epoch): the
    /// walk's start, or the caller's end time if earlier.
    end: i64,
    /// Each service's token; `None` once its trail is exhausted.
    patients: Option<String>,
    studies: Option<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    fn decode(token: &str) -> Option<Self> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token).ok()?).ok()
    }
}

/// AuditService over both services' trails.
#[derive(Debug, Clone)]
pub struct AuditAggregate {
    downstream: Downstream,
}

impl AuditAggregate {
    /// The trails of the services of `downstream`.
    pub fn new(downstream: Downstream) -> Self {
        Self { downstream }
    }
}

async fn page(
    peer: &PeerClient,
    call: &Call,
    req: &pb::ListAuditEventsRequest,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListAuditEventsResponse, Error> {
    let message = pb::ListAuditEventsRequest { page_size, page_token: page_token.to_owned(), ..req.clone() };
    let answer = clinic_core::bounded!(AuditServiceClient::new(peer.channel()))
        .list_audit_events(peer.request(message, call))
        .await;
    Ok(answer.downstream(peer.peer(), "reading the audit trail")?)
}

fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

impl AuditAggregate {
    async fn list(
        &self,
        req: pb::ListAuditEventsRequest,
        call: &Call,
    ) -> Result<pb::ListAuditEventsResponse, Error> {
        let filter = AuditFilter::parse(&req).map_err(Error::from)?;
        let size = filter.size as usize;
        let cursor = if req.page_token.is_empty() {
            let now = Utc::now().timestamp_micros();
            let end = filter.end.map_or(now, |e| e.timestamp_micros().min(now));
            Cursor { end, patients: Some(String::new()), studies: Some(String::new()) }
        } else {
            Cursor::decode(&req.page_token).ok_or(Error::Api(ApiError::InvalidPageToken))?
        };
        let end = DateTime::<Utc>::from_timestamp_micros(cursor.end)
            .ok_or(Error::Api(ApiError::InvalidPageToken))?;
        let req = pb::ListAuditEventsRequest { end_time: Some(timestamp(end)), ..req };
        let sources =
            [(&self.downstream.patients, &cursor.patients), (&self.downstream.studies, &cursor.studies)];
        let mut pages = Vec::new();
        for (peer, token) in sources {
            pages.push(match token {
                Some(token) => Some(page(peer, call, &req, filter.size as i32, token).await?),
                None => None,
            });
        }
        let mut merged: Vec<(i64, usize, pb::AuditEvent)> = pages
            .iter()
            .enumerate()
            .flat_map(|(source, page)| {
                page.iter()
                    .flat_map(move |p| p.events.iter().map(move |e| (micros(&e.time), source, e.clone())))
            })
            .collect();
        merged.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        merged.truncate(size);
        let mut next = Cursor { end: cursor.end, patients: None, studies: None };
        for (source, ((peer, token), page_)) in sources.iter().zip(&pages).enumerate() {
            let Some(page_) = page_ else { continue };
            let taken = merged.iter().filter(|m| m.1 == source).count();
            let resume = if taken == page_.events.len() {
                Some(page_.next_page_token.clone()).filter(|t| !t.is_empty())
            } else if taken == 0 {
                (*token).clone()
            } else {
                // Part of this page was shown: the token after exactly those.
                let start = (*token).clone().unwrap_or_default();
                Some(page(peer, call, &req, taken as i32, &start).await?.next_page_token)
            };
            match source {
                0 => next.patients = resume,
                _ => next.studies = resume,
            }
        }
        let next_page_token =
            if next.patients.is_none() && next.studies.is_none() { String::new() } else { next.encode() };
        Ok(pb::ListAuditEventsResponse { events: merged.into_iter().map(|m| m.2).collect(), next_page_token })
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditAggregate {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(self.list(request.into_inner(), &call).await?))
    }
}

/// Records the gateway's own audited rpcs (the listing: the method the user
/// called, with every patient it showed) in patients-service's trail,
/// through its AuditIntakeService, under the caller's own token.
#[derive(Debug, Clone)]
pub struct IntakeSink {
    patients: PeerClient,
}

impl IntakeSink {
    /// Records through `patients`.
    pub fn new(patients: PeerClient) -> Self {
        Self { patients }
    }
}

impl AuditSink for IntakeSink {
    fn append(&self, event: Event, call: Call) -> clinic_layers::BoxFuture<bool> {
        let peer = self.patients.clone();
        // Under the caller's token and request id, without the rpc's
        // deadline: the event is recorded after the answer is ready.
        let call = call.detached();
        Box::pin(async move {
            let message = intake::AppendAuditEventRequest {
                method: event.method.clone(),
                patient_ids: event.patient_ids.clone(),
                code: event.code.to_owned(),
            };
            let client = clinic_core::bounded!(
                intake::audit_intake_service_client::AuditIntakeServiceClient::new(peer.channel())
            );
            // Retried once on another replica if the first is gone: at worst
            // the event is recorded twice, never the access refused for it.
            let answer =
                peer.read(message, &call, |r| async { client.clone().append_audit_event(r).await }).await;
            match answer.downstream(peer.peer(), "recording the audit event") {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, method = %event.method, code = event.code, "recording the gateway's audit event failed");
                    metrics::counter!("audit_write_failures_total").increment(1);
                    false
                }
            }
        })
    }
}
