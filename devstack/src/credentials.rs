//! The development identity provider and certificate authority: what a
//! real deployment gets from Keycloak (or Auth0, Google) and from its CA,
//! made locally so `make up` stays one command.
//!
//! Under `<home>`:
//! - `auth/signing-key.pem`: the private ES256 key that signs development
//!   tokens (mode 0600), kept across runs so tokens stay valid;
//! - `auth/jwks.json`: its public key, the only key the system trusts;
//! - `auth/service-token`: studies-service's own token (role `service`),
//!   rewritten before it expires while the system runs;
//! - `tls/ca.pem`, `tls/server.pem`, `tls/server-key.pem`: a local CA and the
//!   certificate Envoy serves on its TLS port, for `localhost` and
//!   `127.0.0.1`.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use clinic_testkit::keys::{self, SigningKey};

/// The issuer of development tokens (the services' default `JWT_ISSUER`).
pub const ISSUER: &str = clinic_common::auth::DEFAULT_ISSUER;
/// The audience of development tokens (the services' default `JWT_AUDIENCE`).
pub const AUDIENCE: &str = clinic_common::auth::DEFAULT_AUDIENCE;
/// The key id of the development signing key.
pub const KID: &str = "clinic-dev-1";
/// The subject of studies-service's own token.
pub const SERVICE_SUBJECT: &str = "studies-service";
/// How long tokens are valid unless asked otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Key material that could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// Generating or parsing a key or certificate.
    #[error("{0}")]
    Key(#[from] keys::KeyError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CredentialsError + '_ {
    move |source| CredentialsError::Io { path: path.to_owned(), source }
}

/// Writes `contents` to `path` atomically (a reader never sees half a
/// file), readable by its owner only unless `shared`.
fn write_file(path: &Path, contents: &str, private: bool, shared: bool) -> Result<(), CredentialsError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io_error(&tmp))?;
    let mode = if private && !shared { 0o600 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// The development signing key, JWKS and certificates under a home folder.
#[derive(Debug, Clone)]
pub struct DevCredentials {
    home: PathBuf,
    key: SigningKey,
}

impl DevCredentials {
    /// Loads the credentials under `home`, making whatever is missing. With
    /// `shared`, private keys are readable by other users too (containers
    /// whose processes run as different users share one volume).
    pub fn ensure(home: &Path, shared: bool) -> Result<Self, CredentialsError> {
        let auth = home.join("auth");
        let tls = home.join("tls");
        for dir in [&auth, &tls] {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let key_file = auth.join("signing-key.pem");
        let key = match std::fs::read_to_string(&key_file) {
            Ok(pem) => SigningKey::from_pem(KID, &pem)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = SigningKey::generate(KID)?;
                write_file(&key_file, &key.private_pem, true, shared)?;
                key
            }
            Err(e) => return Err(io_error(&key_file)(e)),
        };
        let jwks_file = auth.join("jwks.json");
        let jwks = keys::jwks([&key]);
        if std::fs::read_to_string(&jwks_file).ok().as_deref() != Some(jwks.as_str()) {
            write_file(&jwks_file, &jwks, false, shared)?;
        }
        let credentials = Self { home: home.to_owned(), key };
        if ![credentials.ca_file(), credentials.cert_file(), credentials.cert_key_file()]
            .iter()
            .all(|f| f.exists())
        {
            let certs = keys::certificates(&[])?;
            write_file(&credentials.cert_key_file(), &certs.key_pem, true, shared)?;
            write_file(&credentials.cert_file(), &certs.cert_pem, false, shared)?;
            write_file(&credentials.ca_file(), &certs.ca_pem, false, shared)?;
        }
        Ok(credentials)
    }

    /// The JWKS the system trusts.
    pub fn jwks_file(&self) -> PathBuf {
        self.home.join("auth").join("jwks.json")
    }

    /// Where studies-service reads its own token.
    pub fn service_token_file(&self) -> PathBuf {
        self.home.join("auth").join("service-token")
    }

    /// The local CA's certificate, what TLS clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.home.join("tls").join("ca.pem")
    }

    /// The certificate Envoy serves.
    pub fn cert_file(&self) -> PathBuf {
        self.home.join("tls").join("server.pem")
    }

    /// The private key of [`Self::cert_file`].
    pub fn cert_key_file(&self) -> PathBuf {
        self.home.join("tls").join("server-key.pem")
    }

    /// A token for `subject` with `roles`, valid for `ttl`.
    pub fn token(&self, subject: &str, roles: &[&str], ttl: Duration) -> Result<String, CredentialsError> {
        Ok(self.key.sign(&keys::claims(ISSUER, AUDIENCE, subject, roles, ttl))?)
    }

    /// Writes a fresh `service` token (valid for [`DEFAULT_TTL`]) for
    /// studies-service; call again before half of it has passed.
    pub fn refresh_service_token(&self, shared: bool) -> Result<(), CredentialsError> {
        let token = self.token(SERVICE_SUBJECT, &["service"], DEFAULT_TTL)?;
        write_file(&self.service_token_file(), &token, true, shared)
    }
}

/// A duration such as `90s`, `15m`, `1h` or `2d` (humantime's syntax), or
/// a number of seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 90s, 15m or 1h: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_made_once_and_kept() {
        let home = std::env::temp_dir().join(format!("clinic-creds-{:x}", rand::random::<u64>()));
        let first = DevCredentials::ensure(&home, false).unwrap();
        let again = DevCredentials::ensure(&home, false).unwrap();
        assert_eq!(first.key.private_pem, again.key.private_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("auth/signing-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(std::fs::read_to_string(first.ca_file()).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn ttls_read_like_humans_write_them() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_ttl("soon").is_err());
    }
}
