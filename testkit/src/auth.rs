//! Tokens for tests: a signing key and its JWKS file, tokens for any role,
//! and clients that carry one.

use std::{
    path::PathBuf,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use clinic_auth::AuthSettings;
use tonic::transport::Channel;

use clinic_dev_keys::{self as keys, SigningKey};

pub use clinic_dev_keys::bearer::{Authed, Bearer, authed};

/// The issuer test tokens carry.
pub const ISSUER: &str = "clinic-test";
/// The audience test tokens carry.
pub const AUDIENCE: &str = "clinic";

/// A signing key (or several, for rotation) and the JWKS file that trusts
/// them.
#[derive(Debug)]
pub struct TestAuth {
    jwks_file: PathBuf,
    keys: Mutex<Vec<SigningKey>>,
}

impl TestAuth {
    /// A fresh key `test-1` and its JWKS file in a temporary folder.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "clinic-auth-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("a folder for the JWKS");
        let auth = Self { jwks_file: dir.join("jwks.json"), keys: Mutex::new(Vec::new()) };
        auth.add_key("test-1");
        auth
    }

    /// Settings that trust this JWKS, issuer and audience.
    pub fn settings(&self) -> AuthSettings {
        AuthSettings {
            jwks_file: self.jwks_file.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_seconds: clinic_auth::DEFAULT_LEEWAY_SECONDS,
        }
    }

    fn write(&self, keys: &[SigningKey]) {
        let tmp = self.jwks_file.with_extension("tmp");
        std::fs::write(&tmp, keys::jwks(keys)).expect("writing the JWKS");
        std::fs::rename(&tmp, &self.jwks_file).expect("replacing the JWKS");
    }

    /// Adds a key named `kid` to the JWKS; new tokens are signed with it.
    pub fn add_key(&self, kid: &str) -> SigningKey {
        let key = SigningKey::generate(kid).expect("a signing key");
        let mut keys = self.keys.lock().expect("keys lock");
        keys.insert(0, key.clone());
        self.write(&keys);
        key
    }

    /// Removes the key `kid` from the JWKS.
    pub fn remove_key(&self, kid: &str) {
        let mut keys = self.keys.lock().expect("keys lock");
        keys.retain(|k| k.kid != kid);
        self.write(&keys);
    }

    /// The current signing key.
    pub fn key(&self) -> SigningKey {
        self.keys.lock().expect("keys lock")[0].clone()
    }

    /// A token for `subject` with `roles`, valid for an hour.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.token_for(subject, roles, Duration::from_secs(3600))
    }

    /// A token for `subject` with `roles`, valid for `ttl`.
    pub fn token_for(&self, subject: &str, roles: &[&str], ttl: Duration) -> String {
        self.sign(&keys::claims(ISSUER, AUDIENCE, subject, roles, ttl))
    }

    /// A token saying exactly `claims`, signed with the current key.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.key().sign(claims).expect("signing a token")
    }
}

impl Default for TestAuth {
    fn default() -> Self {
        Self::new()
    }
}

/// The key every test of this process trusts unless it sets up its own.
pub fn shared() -> &'static TestAuth {
    static SHARED: OnceLock<TestAuth> = OnceLock::new();
    SHARED.get_or_init(TestAuth::new)
}

/// `channel` carrying an admin token of the shared key (subject `test-admin`).
pub fn admin(channel: Channel) -> Authed {
    static TOKEN: OnceLock<String> = OnceLock::new();
    authed(channel, TOKEN.get_or_init(|| shared().token("test-admin", &["admin"])))
}

/// One way a token can be wrong, and the reason a service gives for it.
#[derive(Debug, Clone)]
pub struct Forged {
    /// What is wrong with it.
    pub what: &'static str,
    /// The token.
    pub token: String,
    /// The ErrorInfo reason a service answers with.
    pub reason: &'static str,
}

fn b64(value: &serde_json::Value) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(value.to_string())
}

impl TestAuth {
    /// Every kind of token the contract says must be refused (a missing
    /// token aside), each naming `subject` with `roles` that would be enough.
    pub fn forged(&self, roles: &[&str]) -> Vec<Forged> {
        let subject = "mallory";
        let valid = keys::claims(ISSUER, AUDIENCE, subject, roles, Duration::from_secs(3600));
        let with = |change: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut claims = valid.clone();
            change(claims.as_object_mut().expect("claims are an object"));
            claims
        };
        let now = keys::now();
        let kid = self.key().kid;
        let intruder = SigningKey::generate("intruder").expect("a key");
        let impostor = SigningKey::generate(&kid).expect("a key");
        let good = self.sign(&valid);
        let (_, rest) = good.split_once('.').expect("a JWT has three parts");
        let hmac = jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some(kid.clone()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
            },
            &valid,
            &jsonwebtoken::EncodingKey::from_secret(self.key().jwk.to_string().as_bytes())
                .expect("an HMAC key"),
        )
        .expect("an HMAC token");
        let forged = |what, token, reason| Forged { what, token, reason };
        let invalid = clinic_auth::UNAUTHENTICATED;
        vec![
            forged("not a JWT", "not-a-jwt".to_owned(), invalid),
            forged(
                "alg none",
                format!(
                    "{}.{}.",
                    b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
                    b64(&valid)
                ),
                invalid,
            ),
            forged("HS256 keyed with the public key", hmac, invalid),
            forged(
                "alg switched to RS256",
                format!("{}.{rest}", b64(&serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}))),
                invalid,
            ),
            forged("a kid not in the JWKS", intruder.sign(&valid).expect("signed"), invalid),
            forged("another key under a trusted kid", impostor.sign(&valid).expect("signed"), invalid),
            forged(
                "no kid",
                {
                    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                    header.kid = None;
                    let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key().private_pem.as_bytes())
                        .expect("key");
                    jsonwebtoken::encode(&header, &valid, &key).expect("signed")
                },
                invalid,
            ),
            forged(
                "a tampered payload",
                {
                    let mut parts: Vec<&str> = good.split('.').collect();
                    let admin = b64(&with(&|c| {
                        c.insert("sub".into(), "root".into());
                        c.insert("roles".into(), serde_json::json!(["admin", "service"]));
                    }));
                    parts[1] = &admin;
                    parts.join(".")
                },
                invalid,
            ),
            forged(
                "another issuer",
                self.sign(&with(&|c| {
                    c.insert("iss".into(), "someone-else".into());
                })),
                invalid,
            ),
            forged(
                "another audience",
                self.sign(&with(&|c| {
                    c.insert("aud".into(), "another-api".into());
                })),
                invalid,
            ),
            forged(
                "expired",
                self.sign(&with(&|c| {
                    c.insert("nbf".into(), (now - 7200).into());
                    c.insert("exp".into(), (now - 3600).into());
                })),
                clinic_auth::TOKEN_EXPIRED,
            ),
            forged(
                "not yet valid",
                self.sign(&with(&|c| {
                    c.insert("nbf".into(), (now + 3600).into());
                })),
                invalid,
            ),
            forged(
                "no exp",
                self.sign(&with(&|c| {
                    c.remove("exp");
                })),
                invalid,
            ),
            forged(
                "no sub",
                self.sign(&with(&|c| {
                    c.remove("sub");
                })),
                invalid,
            ),
            forged(
                "an empty sub",
                self.sign(&with(&|c| {
                    c.insert("sub".into(), "".into());
                })),
                invalid,
            ),
        ]
    }
}
