//! Who may call what: JWT verification, the permission of every rpc, and
//! the tower layer that enforces both in front of every service.
//!
//! A token is accepted only if it is signed by a key of the configured JWKS
//! (found by `kid`; ES256 or RS256 only, so `none` and HMAC are refused), its
//! `iss` and `aud` are the configured ones, it has not expired (`exp`
//! required, `nbf` honoured, 30 s of clock skew by default) and it names the caller in
//! `sub`. Verified tokens are cached until they expire, so the check costs a
//! hash lookup instead of a signature verification; the cache is emptied
//! whenever the JWKS file changes, so a removed key stops working at once.
//! A JWKS version that is empty or does not parse is refused and the last
//! good keys kept; a malformed key is left out and the others used.
//!
//! # Layout
//! One file: settings, the [`Verifier`] (keys, cache, reload), the
//! [`PERMISSIONS`] of every rpc, and the [`Authenticate`] that enforces them.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, LazyLock, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clinic_proto::{RPC_ACCESS, RpcAccess, api::v1::Role as AccessRole};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use tonic::Code;

use clinic_core::{
    context::{CallContext, Identity, Role},
    errors,
};

/// Where trusted keys come from and what tokens must say.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// The JSON Web Key Set whose keys sign accepted tokens (a file: mount a
    /// Secret, or sync it from the identity provider's JWKS URL); re-read
    /// when it changes, so keys can rotate.
    #[arg(long = "jwt-jwks-file", env = "JWT_JWKS_FILE", value_name = "PATH")]
    pub jwks_file: PathBuf,
    /// The `iss` accepted tokens carry.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER", value_name = "ISS", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// The `aud` accepted tokens carry.
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE", value_name = "AUD", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long = "jwt-clock-skew-seconds", env = "JWT_CLOCK_SKEW_SECONDS", value_name = "SECONDS", default_value_t = DEFAULT_LEEWAY_SECONDS, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub leeway_seconds: u64,
}

/// The issuer accepted unless configured: `clinic-dev`, the local
/// development key's (`make up`).
pub const DEFAULT_ISSUER: &str = "clinic-dev";
/// The audience accepted unless configured.
pub const DEFAULT_AUDIENCE: &str = "clinic";

/// The clock skew allowed on `exp` and `nbf` unless configured (Envoy's
/// `clock_skew_seconds` is the same).
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// Verified tokens kept at most; a full cache evicts the least used.
const CACHE_ENTRIES: usize = 10_000;

/// What one rpc requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The rpc's path, `/package.Service/Method`.
    pub method: &'static str,
    /// Holding any of these roles (or one that grants it) is enough.
    pub roles: &'static [Role],
    /// Whether the rpc reads or changes patient data, and so leaves an
    /// audit event.
    pub audited: bool,
}

impl Permission {
    /// The permission an rpc declares in its `.proto` file.
    const fn declared(access: &RpcAccess) -> Self {
        let roles: &'static [Role] = match access.role {
            AccessRole::Viewer => &[Role::Viewer],
            AccessRole::Clinician => &[Role::Clinician],
            AccessRole::Admin => &[Role::Admin],
            AccessRole::Service => &[Role::Service],
            AccessRole::FeedReader => &[Role::Service, Role::Admin],
            // Held by no token: the rpc is refused to everyone.
            AccessRole::Unspecified => &[],
        };
        Self { method: access.path, roles, audited: access.audited }
    }
}

/// The permission of every rpc of every Clinic service, as its `.proto`
/// file declares it (`option (clinic.api.v1.access)`, collected at build
/// time into [`clinic_proto::RPC_ACCESS`]). A method with no declaration is
/// refused (and a test fails when an rpc of the API has none).
pub static PERMISSIONS: LazyLock<Vec<Permission>> =
    LazyLock::new(|| RPC_ACCESS.iter().map(Permission::declared).collect());

/// Paths anyone may call: health and server reflection.
pub const OPEN_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The permission of the rpc at `path`, if it has one.
pub fn permission(path: &str) -> Option<&'static Permission> {
    PERMISSIONS.iter().find(|p| p.method == path)
}

/// Whether `path` needs no token.
pub fn is_open(path: &str) -> bool {
    OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// Why a token was refused. Only expiry is worth telling a caller; which
/// check failed otherwise is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// Malformed, wrongly signed, wrongly addressed, or not yet valid.
    #[error("the token is not valid")]
    Invalid,
}

/// The JWKS could not be read at start-up.
#[derive(Debug, thiserror::Error)]
#[error("reading the JWKS {path}: {reason}")]
pub struct JwksError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    exp: u64,
}

/// The trusted keys by `kid`.
type Keys = HashMap<String, (Algorithm, DecodingKey)>;

/// When a file was last changed, and its length: what tells a new version.
type Stamp = Option<(SystemTime, u64)>;

/// A JWKS as far as it can be used: its usable keys, and those keys alone
/// as a JWKS document (what this process republishes, [`Verifier::jwks_json`]).
struct Trusted {
    keys: Keys,
    published: bytes::Bytes,
}

/// Verifies bearer tokens against the JWKS file, with a cache.
pub struct Verifier {
    settings: AuthSettings,
    trusted: RwLock<Trusted>,
    /// The stamp of the last version of the file looked at, usable or not,
    /// so an unusable one is reported once, not every second.
    seen: std::sync::Mutex<Stamp>,
    cache: quick_cache::sync::Cache<String, (Arc<Identity>, u64)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn file_stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The usable keys of a JWKS: EC P-256 (ES256) and RSA (RS256) signing keys
/// with a `kid`; symmetric keys, encryption keys, other curves and keys
/// that do not parse are left out (one malformed key must not make the
/// others unusable). A set with no usable key at all is refused: it would
/// lock everyone out.
fn parse_jwks(bytes: &[u8]) -> Result<(Keys, bytes::Bytes), String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    let mut published = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, (algorithm, key));
                published.push(jwk.clone());
            }
            Err(e) => tracing::warn!(%kid, error = %e, "a JWKS key cannot be used; leaving it out"),
        }
    }
    if keys.is_empty() {
        return Err("no usable ES256 or RS256 signing key with a kid".into());
    }
    let published = serde_json::to_vec(&JwkSet { keys: published }).map_err(|e| e.to_string())?;
    Ok((keys, published.into()))
}

impl Verifier {
    /// A verifier of tokens per `settings`, with the JWKS read now.
    pub fn load(settings: AuthSettings) -> Result<Arc<Self>, JwksError> {
        let error = |reason: String| JwksError { path: settings.jwks_file.display().to_string(), reason };
        let stamp = file_stamp(&settings.jwks_file);
        let bytes = std::fs::read(&settings.jwks_file).map_err(|e| error(e.to_string()))?;
        let (keys, published) = parse_jwks(&bytes).map_err(error)?;
        Ok(Arc::new(Self {
            settings,
            trusted: RwLock::new(Trusted { keys, published }),
            seen: std::sync::Mutex::new(stamp),
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
        }))
    }

    /// Reads the JWKS again if the file changed. A version that cannot be
    /// read or parsed, or holds no usable key (empty), is refused and the
    /// last good keys stay in place; the next change is read as usual.
    pub fn refresh(&self) {
        let stamp = file_stamp(&self.settings.jwks_file);
        {
            let mut seen = self.seen.lock().expect("seen lock");
            if *seen == stamp {
                return;
            }
            *seen = stamp;
        }
        match std::fs::read(&self.settings.jwks_file).map_err(|e| e.to_string()).and_then(|b| parse_jwks(&b))
        {
            Ok((keys, published)) => {
                tracing::info!(keys = keys.len(), "JWKS changed: keys reloaded");
                *self.trusted.write().expect("keys lock") = Trusted { keys, published };
                self.cache.clear();
            }
            Err(reason) => {
                tracing::warn!(%reason, "JWKS changed but cannot be used; keeping the last good keys")
            }
        }
    }

    /// The keys trusted now, as a JWKS document: the last good version of
    /// the file, usable keys only. The gateway publishes it for Envoy.
    pub fn jwks_json(&self) -> bytes::Bytes {
        self.trusted.read().expect("keys lock").published.clone()
    }

    /// Re-reads the JWKS when it changes, every `interval`, until aborted.
    pub fn watch(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let verifier = self.clone();
                let _ = tokio::task::spawn_blocking(move || verifier.refresh()).await;
            }
        })
    }

    /// The caller `token` identifies, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, Rejection> {
        let now = now_secs();
        if let Some((identity, exp)) = self.cache.get(token) {
            return if exp + self.settings.leeway_seconds >= now {
                Ok(identity)
            } else {
                Err(Rejection::Expired)
            };
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Invalid)?;
        if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
            return Err(Rejection::Invalid);
        }
        let kid = header.kid.ok_or(Rejection::Invalid)?;
        let trusted = self.trusted.read().expect("keys lock");
        let (algorithm, key) = trusted.keys.get(&kid).ok_or(Rejection::Invalid)?;
        if *algorithm != header.alg {
            return Err(Rejection::Invalid);
        }
        let mut validation = Validation::new(*algorithm);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.required_spec_claims = HashSet::from(["exp", "sub", "iss", "aud"].map(String::from));
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Rejection::Expired,
                _ => Rejection::Invalid,
            })?
            .claims;
        if claims.sub.trim().is_empty() {
            return Err(Rejection::Invalid);
        }
        let identity = Arc::new(Identity {
            subject: claims.sub,
            roles: claims.roles.iter().filter_map(|r| Role::from_name(r)).collect(),
            token: token.into(),
        });
        self.cache.insert(token.to_owned(), (identity.clone(), claims.exp));
        Ok(identity)
    }
}

/// Reason of UNAUTHENTICATED for a missing or invalid token.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// Reason of UNAUTHENTICATED for an expired token.
pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
/// Reason of PERMISSION_DENIED for a valid token without the role.
pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";

/// The status for a refused token.
pub fn unauthenticated(rejection: Rejection) -> tonic::Status {
    match rejection {
        Rejection::Missing => errors::with_reason(
            Code::Unauthenticated,
            "this call needs a bearer token (authorization: Bearer <JWT>)",
            UNAUTHENTICATED,
        ),
        Rejection::Expired => {
            errors::with_reason(Code::Unauthenticated, "the token has expired", TOKEN_EXPIRED)
        }
        Rejection::Invalid => {
            errors::with_reason(Code::Unauthenticated, "the token is not valid", UNAUTHENTICATED)
        }
    }
}

/// The status for a caller without the role an rpc needs.
pub fn permission_denied(needed: &[Role]) -> tonic::Status {
    let names: Vec<&str> = needed.iter().map(|r| r.name()).collect();
    errors::with_reason_and_metadata(
        Code::PermissionDenied,
        format!("this call needs the role {}", names.join(" or ")),
        PERMISSION_DENIED,
        HashMap::from([("required_roles".to_owned(), names.join(","))]),
    )
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer<B>(request: &http::Request<B>) -> Result<&str, Rejection> {
    let value = request.headers().get(http::header::AUTHORIZATION).ok_or(Rejection::Missing)?;
    let value = value.to_str().map_err(|_| Rejection::Invalid)?;
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Rejection::Invalid);
    }
    Ok(token.trim())
}

use clinic_layers::{BoxFuture, Middleware, Next, Request, Response, refuse};

/// Authenticates and authorizes every rpc but health and reflection: no
/// valid token, UNAUTHENTICATED; a token without the rpc's role,
/// PERMISSION_DENIED; a method with no permission, PERMISSION_DENIED. The
/// verified caller goes into the call's [`CallContext`] (from the request's
/// extensions) and the request's extensions.
#[derive(Debug, Clone)]
pub struct Authenticate {
    verifier: Arc<Verifier>,
}

impl Authenticate {
    /// Checks tokens with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl Middleware for Authenticate {
    fn call(&self, mut req: Request, next: Next) -> BoxFuture<Response> {
        let path = req.uri().path();
        if is_open(path) {
            return next.run(req);
        }
        let Some(permission) = permission(path) else {
            return refuse(errors::with_reason(
                Code::PermissionDenied,
                "no permission is defined for this method",
                PERMISSION_DENIED,
            ));
        };
        let identity = match bearer(&req).and_then(|token| self.verifier.verify(token)) {
            Ok(identity) => identity,
            Err(rejection) => return refuse(unauthenticated(rejection)),
        };
        if let Some(call) = req.extensions().get::<Arc<CallContext>>() {
            call.set_identity(identity.clone());
        }
        if !identity.may(permission.roles) {
            return refuse(permission_denied(permission.roles));
        }
        req.extensions_mut().insert(identity);
        next.run(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_names_a_distinct_method_and_some_role() {
        let mut seen = HashSet::new();
        for p in PERMISSIONS.iter() {
            assert!(seen.insert(p.method), "{} twice", p.method);
            assert!(!p.roles.is_empty(), "{} needs a role", p.method);
            assert!(!is_open(p.method));
        }
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(permission("/clinic.patients.v1.PatientService/Nope").is_none());
    }

    /// A new rpc without a permission fails here (and would be refused).
    #[test]
    fn every_rpc_of_every_clinic_service_has_a_permission_and_nothing_else_does() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(clinic_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut rpcs = HashSet::new();
        for file in set.file.iter().filter(|f| f.package().starts_with("clinic.")) {
            for service in &file.service {
                for method in &service.method {
                    rpcs.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        assert!(rpcs.len() >= PERMISSIONS.len() && !rpcs.is_empty());
        let listed: HashSet<String> = PERMISSIONS.iter().map(|p| p.method.to_owned()).collect();
        let missing: Vec<_> = rpcs.difference(&listed).collect();
        assert!(missing.is_empty(), "rpcs without a permission: {missing:?}");
        let unknown: Vec<_> = listed.difference(&rpcs).collect();
        assert!(unknown.is_empty(), "permissions of no rpc: {unknown:?}");
    }

    /// An identity provider's JWKS as Keycloak publishes it: an RS256
    /// signing key, an encryption key and an HMAC key; only the first is
    /// trusted for tokens.
    #[test]
    fn a_keycloak_style_jwks_yields_only_its_signing_keys() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwks = serde_json::json!({ "keys": [
            { "kid": "sig-1", "kty": "RSA", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB",
              "x5c": ["MIIC"], "x5t": "abc", "x5t#S256": "def" },
            { "kid": "enc-1", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": n, "e": "AQAB" },
            { "kid": "enc-2", "kty": "RSA", "use": "enc", "n": n, "e": "AQAB" },
            { "kid": "hmac-1", "kty": "oct", "alg": "HS256", "k": "c2VjcmV0" },
        ]});
        let (keys, published) = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["sig-1"]);
        assert_eq!(keys["sig-1"].0, Algorithm::RS256);
        let published: JwkSet = serde_json::from_slice(&published).unwrap();
        assert_eq!(published.keys.len(), 1, "only the usable key is republished");
    }

    fn ec_key(kid: &str, x: &str, y: &str) -> serde_json::Value {
        serde_json::json!({ "kid": kid, "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "x": x, "y": y })
    }

    fn published_kids(verifier: &Verifier) -> Vec<String> {
        let set: JwkSet = serde_json::from_slice(&verifier.jwks_json()).unwrap();
        let mut kids: Vec<String> = set.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
        kids.sort();
        kids
    }

    /// Rotation through the file: an empty or unparsable version is refused
    /// and the last good keys kept; a malformed key is left out while the
    /// others are taken (before, it made the whole set unusable, so every
    /// later version carrying it was refused too); a good version after a
    /// refused one is read.
    #[test]
    fn a_jwks_that_is_empty_or_unparsable_is_refused_and_a_malformed_key_is_left_out() {
        let a = ec_key(
            "a",
            "gQo4bemat6_cOIeB-9aL08cWAxSU_loqwbF2zFXLFMk",
            "MT0agXcahIKnZDVxw1D5nHvtqJjP7wIQBbr_3P5iZR0",
        );
        let b = ec_key(
            "b",
            "6I53gIZEwiaVPlFB43IDFZ8Mpy0wHr5g8gQEG_Y2yJs",
            "oOh27LMjR3LRgH1YXEjcTYPGnFn0KQyXNpPyYshKUr0",
        );
        let broken = serde_json::json!({ "kid": "broken", "kty": "RSA", "alg": "RS256", "use": "sig", "n": "%%%", "e": "AQAB" });
        let dir = std::env::temp_dir().join(format!("clinic-jwks-{:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("jwks-{}.json", rand_suffix()));
        let mut version = 0;
        let write = |version: &mut u32, contents: String| {
            // A length that differs each time, so the change is seen even
            // within the file system's timestamp resolution.
            *version += 1;
            std::fs::write(&file, format!("{contents}{}", " ".repeat(*version as usize))).unwrap();
        };
        write(&mut version, serde_json::json!({ "keys": [a] }).to_string());
        let settings = AuthSettings {
            jwks_file: file.clone(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        };
        let verifier = Verifier::load(settings).unwrap();
        assert_eq!(published_kids(&verifier), ["a"]);
        for refused in [serde_json::json!({ "keys": [] }).to_string(), "{ not json".to_owned()] {
            write(&mut version, refused);
            verifier.refresh();
            assert_eq!(published_kids(&verifier), ["a"], "the last good keys stay");
        }
        write(&mut version, serde_json::json!({ "keys": [b, broken] }).to_string());
        verifier.refresh();
        assert_eq!(published_kids(&verifier), ["b"], "the malformed key is left out, the good one taken");
        write(&mut version, serde_json::json!({ "keys": [a, b] }).to_string());
        verifier.refresh();
        assert_eq!(published_kids(&verifier), ["a", "b"]);
        std::fs::remove_file(file).unwrap();
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let request = |value: Option<&str>| {
            let mut builder = http::Request::builder();
            if let Some(v) = value {
                builder = builder.header("authorization", v);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(bearer(&request(Some("Bearer abc"))), Ok("abc"));
        assert_eq!(bearer(&request(Some("bearer  abc "))), Ok("abc"));
        assert_eq!(bearer(&request(None)), Err(Rejection::Missing));
        assert_eq!(bearer(&request(Some("Basic abc"))), Err(Rejection::Invalid));
        assert_eq!(bearer(&request(Some("Bearer "))), Err(Rejection::Invalid));
    }
}
