//! What a server knows about the rpc it is handling: its request id, who is
//! calling, and what the call's audit event will say.
//!
//! The server's context layer opens one [`CallContext`] per rpc (a task-local
//! for the rpc's future); the authentication layer records the caller in it,
//! handlers and storage record the patients concerned, clients read it to
//! pass the caller's token and request id on to other services, and the
//! audit layer writes the event from it.

use std::sync::{
    Arc, Mutex, OnceLock,
    atomic::{AtomicBool, Ordering},
};

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

/// One rpc as the server handles it.
#[derive(Debug)]
pub struct CallContext {
    /// The request's `x-request-id`, the same on every hop.
    pub request_id: String,
    /// The full method name, without the leading slash.
    pub method: String,
    identity: OnceLock<Arc<Identity>>,
    patients: Mutex<Vec<i64>>,
    audited: AtomicBool,
}

impl CallContext {
    /// The context of a call to `path` (`/package.Service/Method`).
    pub fn new(request_id: String, path: &str) -> Arc<Self> {
        Arc::new(Self {
            request_id,
            method: path.trim_start_matches('/').to_owned(),
            identity: OnceLock::new(),
            patients: Mutex::new(Vec::new()),
            audited: AtomicBool::new(false),
        })
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

tokio::task_local! {
    static CALL: Arc<CallContext>;
}

/// Runs `call` as the rpc `context` describes.
pub async fn scope<F: Future>(context: Arc<CallContext>, call: F) -> F::Output {
    CALL.scope(context, call).await
}

/// The context of the rpc being handled, if any (none in background work).
pub fn current() -> Option<Arc<CallContext>> {
    CALL.try_with(Arc::clone).ok()
}

/// The `sub` of the current rpc's verified caller; empty outside an rpc
/// (background work) or before authentication.
pub fn current_subject() -> String {
    current().and_then(|call| call.identity().map(|i| i.subject.clone())).unwrap_or_default()
}

/// Records that the current rpc concerns `patients` (for its audit event).
pub fn concern(patients: impl IntoIterator<Item = i64>) {
    if let Some(call) = current() {
        let mut known = call.patients.lock().expect("call context lock");
        for id in patients {
            if !known.contains(&id) {
                known.push(id);
            }
        }
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

    #[tokio::test]
    async fn patients_concerned_are_collected_once_each() {
        let call = CallContext::new("r".into(), "/a.B/C");
        scope(call.clone(), async {
            concern([3, 1]);
            concern([1, 2]);
        })
        .await;
        assert_eq!(call.patients(), vec![3, 1, 2]);
        assert_eq!(call.method, "a.B/C");
    }
}
