//! What a server knows about the rpc it is handling: its request id, who is
//! calling, its deadline, and what the call's audit event will say - one
//! value, a [`Call`], passed explicitly.
//!
//! The server's `RequestContext` middleware opens one [`CallContext`] per
//! rpc and puts it in the request's extensions; authentication records the
//! caller in it and the deadline middleware its deadline. Handlers take it
//! from the request ([`CallContext::of`]) and pass it on: storage records
//! the patients concerned and builds audited statements from it, clients
//! pass the caller's token, request id and deadline on to other services,
//! and the audit middleware writes the event from it.

use std::sync::{
    Arc, Mutex, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use crate::deadline::{CallState, Deadline};

crate::named_enum! {
    /// What a caller may do; the JWT claim `roles` lists them.
    Role {
        /// Every Get and List of patients and studies, and the listing view.
        Viewer = "viewer",
        /// What a viewer may, plus Create and Update of patients and
        /// studies, and DeleteStudy.
        Clinician = "clinician",
        /// Everything, including DeletePatient and the audit trail.
        Admin = "admin",
        /// What services need of each other when no person is behind a call.
        Service = "service",
    }
}

impl Role {
    /// Whether holding `self` grants what `needed` grants (admin includes
    /// clinician, which includes viewer; service stands apart).
    pub fn grants(self, needed: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Viewer => Some(1),
            Role::Clinician => Some(2),
            Role::Admin => Some(3),
            Role::Service => None,
        };
        match (rank(self), rank(needed)) {
            (Some(held), Some(needed)) => held >= needed,
            _ => self == needed,
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: String,
    /// The roles the token grants (unknown role names are ignored).
    pub roles: Vec<Role>,
    /// The bearer token itself, passed on to other services on the caller's
    /// behalf.
    pub token: Arc<str>,
}

impl Identity {
    /// Whether one of the caller's roles grants one of `needed`.
    pub fn may(&self, needed: &[Role]) -> bool {
        self.roles.iter().any(|held| needed.iter().any(|n| held.grants(*n)))
    }
}

/// One rpc as the server handles it, shared by every step of the call.
pub type Call = Arc<CallContext>;

/// One rpc as the server handles it (or background work, which has no
/// caller and no deadline).
#[derive(Debug)]
pub struct CallContext {
    /// The request's `x-request-id`, the same on every hop.
    pub request_id: String,
    /// The full method name, without the leading slash.
    pub method: String,
    identity: OnceLock<Arc<Identity>>,
    deadline: OnceLock<Arc<CallState>>,
    patients: Mutex<Vec<i64>>,
    audited: AtomicBool,
}

impl CallContext {
    /// The context of a call to `path` (`/package.Service/Method`).
    pub fn new(request_id: String, path: &str) -> Call {
        Arc::new(Self {
            request_id,
            method: path.trim_start_matches('/').to_owned(),
            identity: OnceLock::new(),
            deadline: OnceLock::new(),
            patients: Mutex::new(Vec::new()),
            audited: AtomicBool::new(false),
        })
    }

    /// Work no rpc asked for (a background task): no caller, no deadline,
    /// a fresh request id; `what` names it as a method would.
    pub fn background(what: &str) -> Call {
        Self::new(new_request_id(), what)
    }

    /// The call a request belongs to, as the server's middleware opened it;
    /// a background context when there is none (a handler called directly).
    pub fn of<T>(request: &tonic::Request<T>) -> Call {
        request.extensions().get::<Call>().cloned().unwrap_or_else(|| Self::background("unscoped"))
    }

    /// The same caller and request id with no deadline: for work that must
    /// finish after the rpc's answer (recording its audit event).
    pub fn detached(&self) -> Call {
        let call = Self::new(self.request_id.clone(), &self.method);
        if let Some(identity) = self.identity() {
            call.set_identity(identity.clone());
        }
        call
    }

    /// The `sub` of the verified caller; empty for background work or before
    /// authentication.
    pub fn subject(&self) -> String {
        self.identity().map(|i| i.subject.clone()).unwrap_or_default()
    }

    /// The caller's deadline, once the deadline middleware has set it.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline.get().map(|state| state.deadline())
    }

    /// Records the call's deadline and commit state.
    pub fn set_deadline(&self, state: Arc<CallState>) {
        let _ = self.deadline.set(state);
    }

    /// Marks the call as committing, if its deadline leaves at least
    /// [`crate::deadline::REPLY_ALLOWANCE`]; `false` (do not write)
    /// otherwise. Without a deadline (background work) always `true`.
    pub fn begin_commit(&self) -> bool {
        self.deadline.get().is_none_or(|state| state.begin_commit())
    }

    /// Records that the call concerns `patients` (for its audit event).
    pub fn concern(&self, patients: impl IntoIterator<Item = i64>) {
        let mut known = self.patients.lock().expect("call context lock");
        for id in patients {
            if !known.contains(&id) {
                known.push(id);
            }
        }
    }

    /// The verified caller, once authentication has run.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.get()
    }

    /// Records the verified caller.
    pub fn set_identity(&self, identity: Arc<Identity>) {
        let _ = self.identity.set(identity);
    }

    /// The patients the call concerned so far, distinct, in first-seen order.
    pub fn patients(&self) -> Vec<i64> {
        self.patients.lock().expect("call context lock").clone()
    }

    /// Whether the call's audit event was written with its change.
    pub fn audited(&self) -> bool {
        self.audited.load(Ordering::Acquire)
    }

    /// Marks the call's audit event as written (in the change's transaction).
    pub fn mark_audited(&self) {
        self.audited.store(true, Ordering::Release);
    }
}

/// A request id as sent by a caller, if it is usable: 1 to 128 visible
/// ASCII characters. Anything else is replaced by a fresh one.
pub fn usable_request_id(sent: Option<&str>) -> String {
    match sent {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => new_request_id(),
    }
}

/// A fresh random request id (a version 4 UUID).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `(service, method)` of a gRPC path `/package.Service/Method`.
pub fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.rsplit_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_clinician_and_viewer_but_not_service() {
        assert!(Role::Admin.grants(Role::Viewer));
        assert!(Role::Clinician.grants(Role::Viewer));
        assert!(!Role::Viewer.grants(Role::Clinician));
        assert!(!Role::Admin.grants(Role::Service));
        assert!(!Role::Service.grants(Role::Viewer));
        assert!(Role::Service.grants(Role::Service));
    }

    #[test]
    fn request_ids_are_kept_when_usable_and_replaced_otherwise() {
        assert_eq!(usable_request_id(Some("abc-123")), "abc-123");
        for bad in [None, Some(""), Some("a b"), Some("x\u{1}"), Some(&*"y".repeat(129))] {
            let id = usable_request_id(bad);
            assert_eq!(id.len(), 36, "{id}");
        }
    }

    #[test]
    fn patients_concerned_are_collected_once_each() {
        let call = CallContext::new("r".into(), "/a.B/C");
        call.concern([3, 1]);
        call.concern([1, 2]);
        assert_eq!(call.patients(), vec![3, 1, 2]);
        assert_eq!(call.method, "a.B/C");
    }

    #[test]
    fn a_commit_begins_only_with_time_left_and_is_then_marked() {
        use std::time::{Duration, Instant};
        assert!(CallContext::background("x").begin_commit(), "background work has no deadline");
        let late = CallContext::new("r".into(), "/a.B/C");
        late.set_deadline(CallState::new(Deadline(Instant::now())));
        assert!(!late.begin_commit());
        let early = CallContext::new("r".into(), "/a.B/C");
        let state = CallState::new(Deadline(Instant::now() + Duration::from_secs(5)));
        early.set_deadline(state.clone());
        assert!(early.begin_commit());
        assert!(state.committing());
    }
}
