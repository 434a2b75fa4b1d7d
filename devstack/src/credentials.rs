//! The development identity provider and certificate authority: what a
//! real deployment gets from Keycloak (or Auth0, Google) and from its CA,
//! made locally so `make up` stays one command.
//!
//! Under `<home>`, one folder per reader, so each can be mounted only where
//! it is needed (compose gives each its own volume):
//! - `signing/signing-key.pem`: the private ES256 key that signs development
//!   tokens (mode 0600), kept across runs so tokens stay valid; only what
//!   mints tokens reads it;
//! - `jwks/jwks.json`: its public key, the only key the system trusts,
//!   written once and then the operator's (rotation adds and removes keys);
//!   every service reads it;
//! - `service/token`: studies-service's own token (role `service`, mode
//!   0600), rewritten before it expires while the system runs;
//! - `tls/ca.pem`, `tls/server.pem`, `tls/server-key.pem` (0600): a local CA
//!   and the certificate Envoy serves on its TLS port, for `localhost` and
//!   `127.0.0.1`; only Envoy reads the key.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use clinic_dev_keys::{self as keys, SigningKey};

/// The issuer of development tokens (the services' default `JWT_ISSUER`).
pub const ISSUER: &str = clinic_auth::DEFAULT_ISSUER;
/// The audience of development tokens (the services' default `JWT_AUDIENCE`).
pub const AUDIENCE: &str = clinic_auth::DEFAULT_AUDIENCE;
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

/// Who owns a file: a user id and a group id (compose's containers run as
/// different users; each private file belongs to the one that reads it).
pub type Owner = (u32, u32);

/// Writes `contents` to `path` atomically (a reader never sees half a
/// file): mode 0600 if `private`, else 0644, owned by `owner` if given.
fn write_file(
    path: &Path,
    contents: &str,
    private: bool,
    owner: Option<Owner>,
) -> Result<(), CredentialsError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io_error(&tmp))?;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_error(&tmp))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(io_error(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Who owns the private files other processes read: the TLS key (Envoy)
/// and the service token (studies-service). `None`: whoever writes them
/// (one user runs everything, as `make up` does).
#[derive(Debug, Clone, Copy, Default)]
pub struct Owners {
    /// The owner of `tls/server-key.pem`.
    pub tls: Option<Owner>,
    /// The owner of `service/token`.
    pub service_token: Option<Owner>,
}

/// Parses `uid:gid` (or `uid`, the group the same number).
pub fn parse_owner(text: &str) -> Result<Owner, String> {
    let (uid, gid) = text.split_once(':').unwrap_or((text, text));
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{text:?} is not uid[:gid]"));
    Ok((number(uid)?, number(gid)?))
}

/// The development signing key, JWKS and certificates under a home folder.
#[derive(Debug, Clone)]
pub struct DevCredentials {
    home: PathBuf,
    key: SigningKey,
    owners: Owners,
}

impl DevCredentials {
    /// Loads the credentials under `home`, making whatever is missing, the
    /// private files owned by `owners`.
    pub fn ensure(home: &Path, owners: Owners) -> Result<Self, CredentialsError> {
        for dir in ["signing", "jwks", "service", "tls"].map(|d| home.join(d)) {
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
        let key_file = home.join("signing").join("signing-key.pem");
        let key = match std::fs::read_to_string(&key_file) {
            Ok(pem) => SigningKey::from_pem(KID, &pem)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = SigningKey::generate(KID)?;
                write_file(&key_file, &key.private_pem, true, None)?;
                key
            }
            Err(e) => return Err(io_error(&key_file)(e)),
        };
        let credentials = Self { home: home.to_owned(), key, owners };
        // Written once: after that the file is the operator's, who may add a
        // key or retire this one (rotation); it is never rewritten here.
        if !credentials.jwks_file().exists() {
            write_file(&credentials.jwks_file(), &keys::jwks([&credentials.key]), false, None)?;
        }
        if ![credentials.ca_file(), credentials.cert_file(), credentials.cert_key_file()]
            .iter()
            .all(|f| f.exists())
        {
            let certs = keys::certificates(&[])?;
            write_file(&credentials.cert_key_file(), &certs.key_pem, true, owners.tls)?;
            write_file(&credentials.cert_file(), &certs.cert_pem, false, None)?;
            write_file(&credentials.ca_file(), &certs.ca_pem, false, None)?;
        }
        Ok(credentials)
    }

    /// The JWKS the system trusts.
    pub fn jwks_file(&self) -> PathBuf {
        self.home.join("jwks").join("jwks.json")
    }

    /// Where studies-service reads its own token.
    pub fn service_token_file(&self) -> PathBuf {
        self.home.join("service").join("token")
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
    pub fn refresh_service_token(&self) -> Result<(), CredentialsError> {
        let token = self.token(SERVICE_SUBJECT, &["service"], DEFAULT_TTL)?;
        write_file(&self.service_token_file(), &token, true, self.owners.service_token)
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
        let first = DevCredentials::ensure(&home, Owners::default()).unwrap();
        let again = DevCredentials::ensure(&home, Owners::default()).unwrap();
        assert_eq!(first.key.private_pem, again.key.private_pem);
        first.refresh_service_token().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &str| std::fs::metadata(home.join(path)).unwrap().permissions().mode() & 0o777;
        for private in ["signing/signing-key.pem", "tls/server-key.pem", "service/token"] {
            assert_eq!(mode(private), 0o600, "{private}");
        }
        assert_eq!(mode("jwks/jwks.json"), 0o644);
        assert!(std::fs::read_to_string(first.ca_file()).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        std::fs::remove_dir_all(home).unwrap();
    }

    /// Rotation edits the JWKS: making credentials again (every `make -s
    /// token` does) never puts the file back the way it was.
    #[test]
    fn the_jwks_is_written_once_and_then_left_to_the_operator() {
        let home = std::env::temp_dir().join(format!("clinic-creds-{:x}", rand::random::<u64>()));
        let credentials = DevCredentials::ensure(&home, Owners::default()).unwrap();
        std::fs::write(credentials.jwks_file(), "{\"keys\": [\"rotated\"]}").unwrap();
        DevCredentials::ensure(&home, Owners::default()).unwrap();
        assert!(std::fs::read_to_string(credentials.jwks_file()).unwrap().contains("rotated"));
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn owners_read_as_uid_and_gid() {
        assert_eq!(parse_owner("101"), Ok((101, 101)));
        assert_eq!(parse_owner("10001:10002"), Ok((10001, 10002)));
        assert!(parse_owner("envoy").is_err());
    }

    #[test]
    fn ttls_read_like_humans_write_them() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_ttl("soon").is_err());
    }
}
