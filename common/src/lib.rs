//! What every Clinic service does the same way, written once.
//!
//! A service crate holds its domain rules, its SQL and its gRPC adapter; this
//! crate holds the plumbing around them, so the services differ only in what
//! they are about.
//!
//! # Layout
//! The modules form layers; a module uses only modules listed above it here (a
//! test reads the sources and checks it), so there are no import cycles.
//!
//! Leaves, no I/O:
//! - [`defaults`]: the default ports and addresses, written once.
//! - [`settings`]: helpers for the clap-derived settings.
//! - [`validation`]: field violations, the domain's way to reject input.
//! - [`ids`]: one positive-id type for patients and studies.
//! - [`deadline`]: the caller's deadline and `grpc-timeout` parsing.
//! - [`errors`]: building `tonic::Status` values with rich error details.
//! - [`paging`]: page sizes, the one-row-more page cut, tamper-evident tokens.
//! - [`resource`]: idempotency keys, etags, update masks, timestamps.
//! - [`filter`]: the AIP-160 filter language, parsed once.
//! - [`context`]: the rpc being handled: request id, caller, roles, audit data.
//!
//! Support for I/O:
//! - [`db`]: Postgres settings, pool, error classification, migrations, the
//!   health probe.
//! - [`schema`]: a schema migrated by its owner role and used by a runtime
//!   role that owns nothing; the service's start-up check.
//! - [`tls`]: TLS between Clinic's own processes (mutual, optional).
//! - [`client`]: channels to other services, deadline propagation, and the
//!   one mapping of a downstream failure to the caller's error.
//! - [`api_error`]: the failures every service shares, mapped to statuses once.
//! - [`search`]: filters and orders as SQL, keyset cursors under any order.
//! - [`leader`]: background work run by one replica at a time.
//! - [`idempotency`]: request ids bound to a fingerprint of the request, pruned.
//! - [`coalesce`]: point reads by id answered together when they queue.
//!
//! Hosting:
//! - [`health`]: the `grpc.health.v1.Health` state of a process.
//! - [`layers`]: the tower layers in front of every rpc.
//! - [`auth`]: JWT verification, the permission of every rpc, its layer.
//! - [`audit`]: the append-only audit trail, its group-commit writer, its
//!   layer and AuditService.
//! - [`store`]: storage steps every service shares (durable writes, audited
//!   conditional deletes).
//! - [`site`]: public static files (the listing page) next to gRPC.
//! - [`telemetry`]: the tracing subscriber (text or JSON logs).
//! - [`server`]: serving with health, reflection, layers, graceful shutdown.
//! - [`service`]: a service's shared configuration, serving with a database,
//!   and every binary's `main`.

pub mod api_error;
pub mod audit;
pub mod auth;
pub mod client;
pub mod coalesce;
pub mod context;
pub mod db;
pub mod deadline;
pub mod defaults;
pub mod errors;
pub mod filter;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod layers;
pub mod leader;
pub mod paging;
pub mod resource;
pub mod schema;
pub mod search;
pub mod server;
pub mod service;
pub mod settings;
pub mod site;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validation;

#[cfg(test)]
mod layering {
    /// The modules in layer order, with their sources.
    const MODULES: &[(&str, &str)] = &[
        ("defaults", include_str!("defaults.rs")),
        ("settings", include_str!("settings.rs")),
        ("validation", include_str!("validation.rs")),
        ("ids", include_str!("ids.rs")),
        ("deadline", include_str!("deadline.rs")),
        ("errors", include_str!("errors.rs")),
        ("paging", include_str!("paging.rs")),
        ("resource", include_str!("resource.rs")),
        ("filter", include_str!("filter.rs")),
        ("context", include_str!("context.rs")),
        ("db", include_str!("db.rs")),
        ("schema", include_str!("schema.rs")),
        ("tls", include_str!("tls.rs")),
        ("client", include_str!("client.rs")),
        ("api_error", include_str!("api_error.rs")),
        ("search", include_str!("search.rs")),
        ("leader", include_str!("leader.rs")),
        ("idempotency", include_str!("idempotency.rs")),
        ("coalesce", include_str!("coalesce.rs")),
        ("health", include_str!("health.rs")),
        ("layers", include_str!("layers.rs")),
        ("auth", include_str!("auth.rs")),
        ("audit", include_str!("audit.rs")),
        ("store", include_str!("store.rs")),
        ("site", include_str!("site.rs")),
        ("telemetry", include_str!("telemetry.rs")),
        ("server", include_str!("server.rs")),
        ("service", include_str!("service.rs")),
    ];

    /// Names of modules of this crate that `source` uses: paths written
    /// `crate::name…`, and the names inside a `use crate::{…}` group (doc
    /// comments aside).
    fn used(source: &str) -> Vec<&'static str> {
        let code: String =
            source.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut names = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // The names at the group's top level, up to its closing brace.
                let (mut depth, mut word) = (0, String::new());
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 && (c.is_alphanumeric() || c == '_') {
                        word.push(c);
                    } else {
                        if !word.is_empty() {
                            names.push(std::mem::take(&mut word));
                        }
                    }
                }
            } else {
                names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        MODULES.iter().map(|(name, _)| *name).filter(|m| names.iter().any(|n| n == m)).collect()
    }

    #[test]
    fn every_module_uses_only_modules_of_lower_layers() {
        for (rank, (name, source)) in MODULES.iter().enumerate() {
            for dependency in used(source) {
                let dep_rank = MODULES.iter().position(|(n, _)| *n == dependency).unwrap();
                assert!(
                    dep_rank < rank || dependency == *name,
                    "{name} uses {dependency}, which is not below it"
                );
            }
        }
    }

    #[test]
    fn every_module_is_listed() {
        let lib = include_str!("lib.rs");
        let declared = lib.lines().filter(|l| l.starts_with("pub mod ")).count();
        assert_eq!(declared, MODULES.len());
    }
}
