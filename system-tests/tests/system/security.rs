//! Identity and roles on every service's own port: no call without a valid
//! token (health and reflection aside), every role against every rpc.

use std::net::SocketAddr;

use clinic_auth::PERMISSIONS;
use clinic_core::context::Role;
use clinic_testkit::auth::shared;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use system_tests::{TestSystem, call_raw, reason, spawn_system};

/// Where `method` is served: each service's own packages, and the audit
/// trail on all three.
fn ports_of(system: &TestSystem, method: &str) -> Vec<SocketAddr> {
    let package = method.trim_start_matches('/');
    if package.starts_with("clinic.patients.") {
        vec![system.patients_addr]
    } else if package.starts_with("clinic.studies.") {
        vec![system.studies_addr]
    } else if package.starts_with("clinic.gateway.") {
        vec![system.gateway_addr]
    } else {
        vec![system.patients_addr, system.studies_addr, system.gateway_addr]
    }
}

/// No token, or any kind of bad one: UNAUTHENTICATED with a reason, on
/// every rpc of every port; expiry is the one failure named as such.
#[tokio::test]
async fn every_rpc_on_every_port_refuses_a_missing_or_bad_token() {
    let system = spawn_system().await;
    let forged = shared().forged(&["admin"]);
    assert!(forged.len() >= 14);
    for permission in PERMISSIONS.iter() {
        for addr in ports_of(&system, permission.method) {
            let missing = call_raw(addr, permission.method, None).await.unwrap_err();
            assert_eq!(missing.code(), Code::Unauthenticated, "no token on {}", permission.method);
            assert_eq!(reason(&missing), "UNAUTHENTICATED");
            for bad in &forged {
                let refused = call_raw(addr, permission.method, Some(&bad.token)).await.unwrap_err();
                assert_eq!(
                    (refused.code(), reason(&refused).as_str()),
                    (Code::Unauthenticated, bad.reason),
                    "{} on {} ({addr})",
                    bad.what,
                    permission.method
                );
                assert!(!refused.message().contains("kid") && !refused.message().contains("signature"));
            }
        }
    }
    // Health stays open on every port.
    for addr in [system.patients_addr, system.studies_addr, system.gateway_addr] {
        let channel = clinic_client::channel(&format!("http://{addr}")).unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("health is open");
    }
}

/// Each role against every rpc: allowed calls get past authorization (they
/// may still be invalid, the requests being empty), refused ones are
/// PERMISSION_DENIED naming the role needed. Calls that reach another
/// service do so with the caller's own token, so a role that may call the
/// gateway may also make the calls the gateway makes for it.
#[tokio::test]
async fn each_role_may_call_exactly_the_rpcs_its_permissions_allow() {
    let system = spawn_system().await;
    for role in Role::ALL {
        let token = shared().token(&format!("matrix-{}", role.name()), &[role.name()]);
        for permission in PERMISSIONS.iter() {
            let allowed = permission.roles.iter().any(|needed| role.grants(*needed));
            for addr in ports_of(&system, permission.method) {
                let outcome = call_raw(addr, permission.method, Some(&token)).await;
                let code = outcome.as_ref().err().map_or(Code::Ok, |s| s.code());
                if allowed {
                    assert!(
                        !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                        "{role:?} may call {} but got {outcome:?}",
                        permission.method
                    );
                } else {
                    let status = outcome.expect_err("refused");
                    assert_eq!(status.code(), Code::PermissionDenied, "{role:?} on {}", permission.method);
                    assert_eq!(reason(&status), "PERMISSION_DENIED");
                    assert!(status.message().contains("needs the role"), "{}", status.message());
                }
            }
        }
    }
    // A token with no role known here may call nothing.
    let nobody = shared().token("nobody", &["superuser"]);
    let refused =
        call_raw(system.patients_addr, "/clinic.patients.v1.PatientService/GetPatient", Some(&nobody))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

/// A method that has no permission is refused, even for an admin.
#[tokio::test]
async fn a_method_without_a_permission_is_refused_even_to_an_admin() {
    let system = spawn_system().await;
    let admin = shared().token("test-admin", &["admin"]);
    let refused =
        call_raw(system.patients_addr, "/clinic.patients.v1.PatientService/DropEverything", Some(&admin))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

/// studies-service reads patients' deletion events with its own token
/// (role `service`), from a file read again when it changes: with a token
/// that may not read them the cascade waits; once the file holds a good
/// one, it catches up, without a restart.
#[tokio::test]
async fn deletion_events_are_read_with_the_services_own_token_read_again_when_its_file_changes() {
    let file = std::env::temp_dir().join(format!("clinic-service-token-{:016x}", rand_id()));
    std::fs::write(&file, shared().token("studies-service", &["viewer"])).unwrap();
    let token_file = file.clone();
    let system = system_tests::spawn_system_tuned(move |config| {
        config.service_token =
            clinic_client::ServiceTokenSettings { service_token_file: Some(token_file.clone()) };
    })
    .await;
    let patient = system.create_patient(1).await;
    system.create_study(system_tests::study(patient.id)).await.unwrap();
    system.delete_patient(patient.id, true).await.unwrap();
    let (applied, written) = system.feed_progress().await;
    assert!(applied < written, "a viewer's token may not read the events");

    std::fs::write(&file, shared().token("studies-service", &["service"])).unwrap();
    system.wait_until_caught_up(std::time::Duration::from_secs(10)).await;
    std::fs::remove_file(file).unwrap();
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
