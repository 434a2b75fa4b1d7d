//! Signing keys, JWKS documents, tokens and TLS certificates for local runs
//! and tests: what an identity provider and a certificate authority would
//! supply in production, made here with maintained crates (rcgen for keys
//! and certificates, jsonwebtoken for tokens). The dev tool (`clinic-dev`)
//! and the test kit both use it.
//!
//! # Layout
//! This file: [`SigningKey`], [`jwks`] documents, [`claims`] of tokens, and
//! [`certificates`] of a throwaway CA; [`bearer`]: clients carrying a token.

pub mod bearer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};

/// An ES256 (P-256) signing key with its key id.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// The `kid` tokens signed with it carry.
    pub kid: String,
    /// The private key, PKCS#8 PEM.
    pub private_pem: String,
    /// The public key as a JWK.
    pub jwk: serde_json::Value,
}

/// Why key material could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

impl SigningKey {
    /// A new random key named `kid`.
    pub fn generate(kid: &str) -> Result<Self, KeyError> {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| KeyError(e.to_string()))?;
        Self::from_pem(kid, &pair.serialize_pem())
    }

    /// The key in `private_pem` (PKCS#8), named `kid`.
    pub fn from_pem(kid: &str, private_pem: &str) -> Result<Self, KeyError> {
        let pair = KeyPair::from_pem(private_pem).map_err(|e| KeyError(e.to_string()))?;
        let point = pair.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            return Err(KeyError("not an uncompressed P-256 public key".into()));
        }
        let jwk = serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Ok(Self { kid: kid.to_owned(), private_pem: private_pem.to_owned(), jwk })
    }

    /// A token signed with this key, saying `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, KeyError> {
        let key =
            EncodingKey::from_ec_pem(self.private_pem.as_bytes()).map_err(|e| KeyError(e.to_string()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).map_err(|e| KeyError(e.to_string()))
    }
}

/// A JWKS document holding the public keys of `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> String {
    let keys: Vec<&serde_json::Value> = keys.into_iter().map(|k| &k.jwk).collect();
    serde_json::to_string_pretty(&serde_json::json!({ "keys": keys })).expect("a JWKS serialises")
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The claims of a token for `subject` with `roles`, from `issuer` to
/// `audience`, valid from now for `ttl`.
pub fn claims(
    issuer: &str,
    audience: &str,
    subject: &str,
    roles: &[&str],
    ttl: Duration,
) -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "roles": roles,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs(),
    })
}

/// A local certificate authority and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA's certificate, PEM: what clients trust.
    pub ca_pem: String,
    /// The server's certificate, PEM.
    pub cert_pem: String,
    /// The server's private key, PEM.
    pub key_pem: String,
}

/// A new CA and a certificate for `localhost` and `127.0.0.1` (and `names`)
/// signed by it, valid for a year.
pub fn certificates(names: &[&str]) -> Result<Certificates, KeyError> {
    let error = |e: rcgen::Error| KeyError(e.to_string());
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    ca.distinguished_name.push(DnType::CommonName, "Clinic local development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(error)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(error)?;
    let mut dns: Vec<String> = vec!["localhost".into()];
    dns.extend(names.iter().map(|n| n.to_string()));
    let mut leaf = CertificateParams::new(dns).map_err(error)?;
    leaf.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    // Also a client certificate: the processes of a system under mutual TLS
    // present the same one both ways.
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).map_err(error)?;
    Ok(Certificates { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_tokens_its_jwks_verifies() {
        let key = SigningKey::generate("k1").unwrap();
        let token = key.sign(&claims("iss", "aud", "ana", &["viewer"], Duration::from_secs(60))).unwrap();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks([&key])).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "ana");
        let again = SigningKey::from_pem("k1", &key.private_pem).unwrap();
        assert_eq!(again.jwk, key.jwk);
    }

    #[test]
    fn certificates_are_pem() {
        let certs = certificates(&[]).unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.contains("PRIVATE KEY"));
    }
}
