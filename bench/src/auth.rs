//! What identity and the audit trail cost: token verification with and
//! without the cache, and how many audit events share one insert.

use std::{sync::Arc, time::Instant};

use clinic_auth::{AuthSettings, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_LEEWAY_SECONDS, Verifier};
use clinic_devstack::credentials::DevCredentials;
use sqlx::ConnectOptions;

/// Microseconds per verification.
#[derive(Debug, Clone, Copy)]
pub struct VerificationCost {
    /// A token seen for the first time: signature and claims checked.
    pub uncached_us: f64,
    /// A token verified before, until it expires.
    pub cached_us: f64,
}

/// `n` distinct admin tokens signed with the development key.
pub fn token_pool(
    credentials: &DevCredentials,
    n: usize,
) -> Result<Vec<Arc<str>>, Box<dyn std::error::Error>> {
    (0..n)
        .map(|i| {
            credentials
                .token(&format!("bench-{i}"), &["admin"], std::time::Duration::from_secs(4 * 3600))
                .map(Arc::from)
                .map_err(Into::into)
        })
        .collect()
}

/// Tokens of distinct admin identities, one per load worker: a service
/// gives each caller a share (MAX_IN_FLIGHT_PER_CALLER calls at once), and a
/// benchmark stands for many users.
#[derive(Debug, Clone)]
pub struct Bearers(Arc<Vec<Arc<str>>>);

impl Bearers {
    /// `n` tokens signed with the development key.
    pub fn mint(credentials: &DevCredentials, n: usize) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Self(Arc::new(token_pool(credentials, n.max(1))?)))
    }

    /// The token of `worker`.
    pub fn of(&self, worker: usize) -> Arc<str> {
        self.0[worker % self.0.len()].clone()
    }
}

/// Times the services' own verifier on the stack's JWKS: 2,000 distinct
/// tokens once each, then one token 200,000 times.
pub fn verification_cost(
    credentials: &DevCredentials,
) -> Result<VerificationCost, Box<dyn std::error::Error>> {
    let verifier = Verifier::load(AuthSettings {
        jwks_file: credentials.jwks_file(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        leeway_seconds: DEFAULT_LEEWAY_SECONDS,
    })?;
    let tokens = token_pool(credentials, 2_000)?;
    let started = Instant::now();
    for token in &tokens {
        verifier.verify(token).map_err(|e| e.to_string())?;
    }
    let uncached_us = started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64;
    let repeats = 200_000;
    let started = Instant::now();
    for _ in 0..repeats {
        verifier.verify(&tokens[0]).map_err(|e| e.to_string())?;
    }
    let cached_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(repeats);
    Ok(VerificationCost { uncached_us, cached_us })
}

/// patients-service's audit trail so far: events, and the transactions
/// that inserted them (rows inserted together share their `xmin`).
#[derive(Debug, Clone, Copy)]
pub struct AuditWrites {
    /// Events stored.
    pub events: i64,
    /// Distinct inserting transactions.
    pub transactions: i64,
}

impl AuditWrites {
    /// What was written between `before` and `self`.
    pub fn since(&self, before: &AuditWrites) -> AuditWrites {
        AuditWrites {
            events: self.events - before.events,
            transactions: self.transactions - before.transactions,
        }
    }
}

/// Counts patients-service's audit events and their inserting transactions.
pub async fn audit_writes(admin_url: &str) -> Result<AuditWrites, sqlx::Error> {
    let mut conn = admin_url.parse::<sqlx::postgres::PgConnectOptions>()?.connect().await?;
    let (events, transactions) =
        sqlx::query_as("select count(*), count(distinct xmin::text) from patients.audit_event")
            .fetch_one(&mut conn)
            .await?;
    Ok(AuditWrites { events, transactions })
}
