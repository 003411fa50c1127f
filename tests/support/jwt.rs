//! A test token issuer: signs JWTs (ES256 with a fresh key, RS256 with the fixture key) and
//! publishes its JWKS. Also used by the unit tests of `identity::jwt`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://kubernetes.default.svc";
pub const AUDIENCE: &str = "credential-broker";

pub struct TestIssuer {
    es: EcdsaKeyPair,
    rsa: RsaKeyPair,
    pub es_kid: String,
    pub rsa_kid: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestIssuer {
    /// `label` makes the key ids distinct between issuers.
    pub fn new(label: &str) -> TestIssuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let es = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let rsa_der = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/identity/rsa-test-key.pkcs1.der")).unwrap();
        let rsa = RsaKeyPair::from_der(&rsa_der).unwrap();
        TestIssuer { es, rsa, es_kid: format!("{label}-es"), rsa_kid: format!("{label}-rsa") }
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> Value {
        let point = self.es.public_key().as_ref();
        let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": self.es_kid, "alg": "ES256", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "RSA", "kid": self.rsa_kid, "alg": "RS256", "use": "sig",
             "n": b64(&rsa.n), "e": b64(&rsa.e)},
        ]})
    }

    /// Standard claims for `sub`, valid now for ten minutes.
    pub fn claims(sub: &str) -> Value {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        json!({"iss": ISSUER, "aud": [AUDIENCE], "sub": sub, "iat": now, "nbf": now, "exp": now + 600})
    }

    /// A signed token; `alg` is ES256 or RS256.
    pub fn sign(&self, alg: &str, claims: &Value) -> String {
        let kid = if alg == "RS256" { &self.rsa_kid } else { &self.es_kid };
        let signing_input = format!("{}.{}", b64(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = SystemRandom::new();
        let sig = if alg == "RS256" {
            let mut sig = vec![0; self.rsa.public().modulus_len()];
            self.rsa.sign(&RSA_PKCS1_SHA256, &rng, signing_input.as_bytes(), &mut sig).unwrap();
            sig
        } else {
            self.es.sign(&rng, signing_input.as_bytes()).unwrap().as_ref().to_vec()
        };
        format!("{signing_input}.{}", b64(&sig))
    }

    /// An unsigned token (`alg: none`), as an attacker would send it.
    pub fn unsigned(claims: &Value) -> String {
        format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()))
    }
}
