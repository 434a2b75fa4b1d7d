//! Settings from environment variables, each with a documented default.

use std::{str::FromStr, time::Duration};

/// A setting whose environment variable holds a value that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub name: String,
    /// The value found.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Reads `name`, falling back to `default` when it is unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value.trim().parse().map_err(|e: T::Err| ConfigError {
            name: name.to_owned(),
            value,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// Reads a duration given in milliseconds from `name`, or `default`.
pub fn env_millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let millis = env_or(name, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))?;
    Ok(Duration::from_millis(millis))
}

/// Reads a string from `name`, or `default`.
pub fn env_string(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// The settings every Clinic service with a database reads the same way.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where to listen (`LISTEN_ADDR`).
    pub listen_addr: std::net::SocketAddr,
    /// Postgres connection and pool settings (`DATABASE_URL`, `DB_*`).
    pub db: crate::db::DbSettings,
    /// Request ceiling and shutdown drain (`REQUEST_TIMEOUT_MS`, `SHUTDOWN_DRAIN_TIMEOUT_MS`).
    pub server: crate::server::ServerSettings,
    /// How often health checks Postgres (`HEALTH_PROBE_INTERVAL_MS`, default 1000).
    pub health_probe_interval: Duration,
    /// Longest wait for another service, whatever the caller's deadline
    /// (`DOWNSTREAM_TIMEOUT_MS`, default 5000).
    pub downstream_timeout: Duration,
}

impl ServiceConfig {
    /// Reads the settings, with the service's own default address and database URL.
    pub fn from_env(default_listen_addr: &str, default_database_url: &str) -> Result<Self, ConfigError> {
        let default_addr =
            default_listen_addr.parse().map_err(|e: std::net::AddrParseError| ConfigError {
                name: "LISTEN_ADDR".into(),
                value: default_listen_addr.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            listen_addr: env_or("LISTEN_ADDR", default_addr)?,
            db: crate::db::DbSettings::from_env(default_database_url)?,
            server: crate::server::ServerSettings::from_env()?,
            health_probe_interval: env_millis("HEALTH_PROBE_INTERVAL_MS", Duration::from_secs(1))?,
            downstream_timeout: env_millis("DOWNSTREAM_TIMEOUT_MS", Duration::from_secs(5))?,
        })
    }
}
