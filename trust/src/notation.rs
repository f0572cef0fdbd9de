//! Notary Project (notation) signatures: a referrer of artifact type
//! `application/vnd.cncf.notary.signature` whose layer is a JWS envelope
//! (`application/jose+json`, notation's default) signing
//! `{"targetArtifact": descriptor}` with the key of the first certificate
//! in its `x5c` chain; and notation's trust policy (`trustpolicy.json`)
//! with its trust store (`truststore/x509/ca/<name>/`), as `notation
//! verify` reads them.
//!
//! Verified here: the envelope's integrity (PS256/384/512 or ES256 over
//! the JWS signing input), that it names the image's digest, that the
//! signing certificate chains to one of the trust store's, is valid now, and
//! matches the policy's trusted identities, and that the envelope has not
//! expired. The chain is followed from the signing certificate to one the
//! trust store holds, each link checked (issuer name, CA, signature: RSA
//! PKCS#1 v1.5 or ECDSA P-256). COSE_Sign1 envelopes (`application/cose`)
//! are read too. Not yet: timestamps (TSA) and revocation (OCSP/CRL).
//!
//! Signing ([`jws_envelope`]) writes the envelope `notation sign` writes by
//! default, with an RSA (PS256/384/512 by key size) or P-256 (ES256) key
//! and its certificate chain.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;
use x509_cert::Certificate;
use x509_cert::der::{Decode, Encode};

use crate::TrustError;

pub const ARTIFACT_TYPE_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
pub const MEDIA_TYPE_JWS: &str = "application/jose+json";
pub const MEDIA_TYPE_COSE: &str = "application/cose";
const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const EXPIRY: &str = "io.cncf.notary.expiry";

/// notation's trust policy and the certificates of its trust stores.
pub struct TrustPolicy {
    origin: String,
    policies: Vec<PolicyStatement>,
}

struct PolicyStatement {
    name: String,
    scopes: Vec<String>,
    level: String,
    certificates: Vec<Vec<u8>>,
    identities: Vec<String>,
}

impl TrustPolicy {
    /// Reads `dir/trustpolicy.json` and the trust stores it names under
    /// `dir/truststore/x509/` (notation's config directory layout).
    pub fn load(dir: &Path) -> Result<TrustPolicy, TrustError> {
        let path = dir.join("trustpolicy.json");
        let origin = path.display().to_string();
        let bad =
            |why: String| TrustError::Policy(format!("the notation trust policy {origin} {why}"));
        let bytes = std::fs::read(&path).map_err(|e| {
            TrustError::Policy(format!(
                "cannot read the notation trust policy {origin}: {e}"
            ))
        })?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("is not valid JSON ({e})")))?;
        let statements = v
            .get("trustPolicies")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("has no trustPolicies list".into()))?;
        let strings = |s: &Value, key: &str| -> Vec<String> {
            s.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut policies = Vec::new();
        for s in statements {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let level = s
                .pointer("/signatureVerification/level")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("has no signatureVerification.level in \"{name}\"")))?
                .to_string();
            if !["strict", "permissive", "audit", "skip"].contains(&level.as_str()) {
                return Err(bad(format!(
                    "has an unknown level \"{level}\" in \"{name}\""
                )));
            }
            let mut certificates = Vec::new();
            for store in strings(s, "trustStores") {
                let (kind, store_name) = store.split_once(':').ok_or_else(|| {
                    bad(format!(
                        "names a trust store \"{store}\" that is not TYPE:NAME"
                    ))
                })?;
                certificates.extend(read_store(
                    &dir.join("truststore/x509").join(kind).join(store_name),
                )?);
            }
            policies.push(PolicyStatement {
                scopes: strings(s, "registryScopes"),
                identities: strings(s, "trustedIdentities"),
                name,
                level,
                certificates,
            });
        }
        Ok(TrustPolicy { origin, policies })
    }

    /// The statement for `repository` (`host/path`): an exact scope, else `*`.
    fn statement(&self, repository: &str) -> Option<&PolicyStatement> {
        self.policies
            .iter()
            .find(|p| p.scopes.iter().any(|s| s == repository))
            .or_else(|| {
                self.policies
                    .iter()
                    .find(|p| p.scopes.iter().any(|s| s == "*"))
            })
    }

    /// Checks the signature envelopes of the image `digest` in `repository`:
    /// `Ok` names what accepted it, `Err(Refused)` says why not.
    pub fn check(
        &self,
        repository: &str,
        digest: &str,
        envelopes: &[(String, Vec<u8>)],
        now: SystemTime,
    ) -> Result<String, TrustError> {
        let Some(statement) = self.statement(repository) else {
            return Err(TrustError::Refused(format!(
                "no statement of the notation trust policy {} applies to {repository}",
                self.origin
            )));
        };
        if statement.level == "skip" {
            return Ok(format!(
                "notation trust policy \"{}\" (level skip)",
                statement.name
            ));
        }
        let mut reason = "it has no notation signature".to_string();
        for (media_type, envelope) in envelopes {
            match verify_envelope(media_type, envelope, digest, statement, now) {
                Ok(subject) => {
                    return Ok(format!(
                        "notation signature by {subject} (trust policy \"{}\", level {})",
                        statement.name, statement.level
                    ));
                }
                Err(why) => reason = why,
            }
        }
        if statement.level == "audit" {
            return Ok(format!(
                "notation trust policy \"{}\" (level audit: {reason})",
                statement.name
            ));
        }
        Err(TrustError::Refused(format!(
            "image {repository}@{digest} is not signed as the notation trust policy {} (\"{}\") requires: {reason}",
            self.origin, statement.name
        )))
    }
}

/// A key that signs notation envelopes.
pub enum SigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(crate::PrivateKey),
}

impl SigningKey {
    /// Reads a PKCS#8 `PRIVATE KEY` PEM (what `notation cert generate-test`
    /// writes to `localkeys/`), RSA or P-256, or a sealed cosign key.
    pub fn from_pem(pem: &[u8], password: &[u8], what: &str) -> Result<SigningKey, TrustError> {
        use rsa::pkcs8::DecodePrivateKey;
        if let Ok(text) = std::str::from_utf8(pem)
            && let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(text.trim())
        {
            return Ok(SigningKey::Rsa(Box::new(key)));
        }
        crate::PrivateKey::from_pem(pem, password, what).map(SigningKey::P256)
    }

    /// The JWS algorithm notation uses for this key.
    fn algorithm(&self) -> &'static str {
        use rsa::traits::PublicKeyParts;
        match self {
            SigningKey::Rsa(k) if k.size() >= 512 => "PS512",
            SigningKey::Rsa(k) if k.size() >= 384 => "PS384",
            SigningKey::Rsa(_) => "PS256",
            SigningKey::P256(_) => "ES256",
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        let mut rng = rand_core::OsRng;
        match (self, self.algorithm()) {
            (SigningKey::Rsa(k), "PS512") => {
                rsa::pss::BlindedSigningKey::<sha2::Sha512>::new((**k).clone())
                    .sign_with_rng(&mut rng, message)
                    .to_vec()
            }
            (SigningKey::Rsa(k), "PS384") => {
                rsa::pss::BlindedSigningKey::<sha2::Sha384>::new((**k).clone())
                    .sign_with_rng(&mut rng, message)
                    .to_vec()
            }
            (SigningKey::Rsa(k), _) => {
                rsa::pss::BlindedSigningKey::<sha2::Sha256>::new((**k).clone())
                    .sign_with_rng(&mut rng, message)
                    .to_vec()
            }
            (SigningKey::P256(k), _) => {
                // JWS carries ECDSA signatures as r‖s, not DER.
                let der = k.sign(message);
                p256::ecdsa::Signature::from_der(&der)
                    .expect("a signature we made parses")
                    .to_bytes()
                    .to_vec()
            }
        }
    }
}

/// The certificates (DER) of a PEM chain, leaf first; refused if there are none.
pub fn certificate_chain(pem: &[u8], what: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    let chain = pem_certificates(pem);
    if chain.is_empty() || Certificate::from_der(&chain[0]).is_err() {
        return Err(TrustError::key(what, "is not a PEM certificate (chain)"));
    }
    Ok(chain)
}

/// A JWS envelope signing `subject` (the image's descriptor JSON:
/// mediaType, digest, size) as `notation sign` does.
pub fn jws_envelope(
    key: &SigningKey,
    chain: &[Vec<u8>],
    subject: &Value,
    signing_time: SystemTime,
) -> Result<Vec<u8>, TrustError> {
    let leaf = Certificate::from_der(&chain[0])
        .map_err(|_| TrustError::Malformed("the signing certificate is not X.509".into()))?;
    let spki = leaf
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| TrustError::Malformed("the signing certificate has no public key".into()))?;
    let protected = serde_json::json!({
        "alg": key.algorithm(),
        "crit": [SIGNING_SCHEME],
        "cty": PAYLOAD_CONTENT_TYPE,
        SIGNING_SCHEME: "notary.x509",
        "io.cncf.notary.signingTime": humantime::format_rfc3339_seconds(signing_time).to_string(),
    });
    let payload = serde_json::json!({"targetArtifact": subject});
    let protected_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).expect("JSON"));
    let payload_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("JSON"));
    let signing_input = format!("{protected_b64}.{payload_b64}");
    let signature = key.sign(signing_input.as_bytes());
    // The certificate must be the key's: a mismatch would only be found
    // by the verifier.
    if !verify_signature(key.algorithm(), &spki, signing_input.as_bytes(), &signature)
        .unwrap_or(false)
    {
        return Err(TrustError::Malformed(
            "the signing certificate is not the signing key's (its public key differs)".into(),
        ));
    }
    let envelope = serde_json::json!({
        "payload": payload_b64,
        "protected": protected_b64,
        "header": {
            "x5c": chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>(),
            "io.cncf.notary.signingAgent": concat!("wasmbox/", env!("CARGO_PKG_VERSION")),
        },
        "signature": URL_SAFE_NO_PAD.encode(signature),
    });
    Ok(serde_json::to_vec(&envelope).expect("JSON"))
}

/// The `io.cncf.notary.x509chain.thumbprint#S256` annotation notation puts
/// on a signature's manifest: a JSON list of the chain's SHA-256s.
pub fn chain_thumbprints(chain: &[Vec<u8>]) -> String {
    use sha2::Digest as _;
    let prints: Vec<String> = chain
        .iter()
        .map(|c| hex::encode(sha2::Sha256::digest(c)))
        .collect();
    serde_json::to_string(&prints).expect("JSON")
}

pub const ANNOTATION_THUMBPRINTS: &str = "io.cncf.notary.x509chain.thumbprint#S256";

fn read_store(dir: &Path) -> Result<Vec<Vec<u8>>, TrustError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        TrustError::Policy(format!(
            "cannot read the notation trust store {}: {e}",
            dir.display()
        ))
    })?;
    let mut certs = Vec::new();
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path)
            .map_err(|e| TrustError::Policy(format!("cannot read {}: {e}", path.display())))?;
        for der in pem_certificates(&bytes) {
            certs.push(der);
        }
    }
    Ok(certs)
}

/// The DER of each `CERTIFICATE` block (or the file itself if it is DER).
fn pem_certificates(bytes: &[u8]) -> Vec<Vec<u8>> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![bytes.to_vec()];
    };
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .filter_map(|b64| {
            STANDARD
                .decode(b64.split_whitespace().collect::<String>())
                .ok()
        })
        .collect()
}

/// A notation envelope taken apart: what its signature covers, and what it says.
struct Envelope {
    alg: String,
    /// The bytes the signature covers (the JWS signing input; COSE's Sig_structure).
    message: Vec<u8>,
    signature: Vec<u8>,
    /// `x5c` / `x5chain`, leaf first.
    chain: Vec<Vec<u8>>,
    /// The notation payload, `{"targetArtifact": …}`.
    payload: Vec<u8>,
}

/// Takes a JWS envelope apart, checking its protected header.
fn parse_jws(envelope: &[u8], now: SystemTime) -> Result<Envelope, String> {
    let v: Value =
        serde_json::from_slice(envelope).map_err(|_| "its JWS envelope is not JSON".to_string())?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or(format!("its JWS envelope has no {k}"))
    };
    let protected_b64 = field("protected")?;
    let payload_b64 = field("payload")?;
    let signature = URL_SAFE_NO_PAD
        .decode(field("signature")?)
        .map_err(|_| "its JWS signature is not base64url".to_string())?;
    let protected: Value = URL_SAFE_NO_PAD
        .decode(protected_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("its JWS protected header is not base64url JSON")?;
    let header = |k: &str| protected.get(k).and_then(Value::as_str);
    let crit: Vec<&str> = protected
        .get("crit")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let expiry = match header(EXPIRY) {
        Some(t) => Some(
            humantime::parse_rfc3339_weak(t).map_err(|_| "its expiry is not a time".to_string())?,
        ),
        None => None,
    };
    check_header(header("cty"), header(SIGNING_SCHEME), &crit, expiry, now)?;
    let chain: Vec<Vec<u8>> = v
        .pointer("/header/x5c")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|c| STANDARD.decode(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| "its payload is not base64url".to_string())?;
    Ok(Envelope {
        alg: header("alg").unwrap_or("").to_string(),
        message: format!("{protected_b64}.{payload_b64}").into_bytes(),
        signature,
        chain,
        payload,
    })
}

/// The checks every notation envelope's signed header must pass.
fn check_header(
    content_type: Option<&str>,
    scheme: Option<&str>,
    crit: &[&str],
    expiry: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), String> {
    if content_type != Some(PAYLOAD_CONTENT_TYPE) {
        return Err("its payload is not a notation payload".into());
    }
    if scheme != Some("notary.x509") {
        return Err("it uses a signing scheme other than notary.x509 (signing authorities are not supported yet)".into());
    }
    if !crit.contains(&SIGNING_SCHEME) {
        return Err("its signed header does not mark the signing scheme critical".into());
    }
    if expiry.is_some_and(|e| e < now) {
        return Err("the signature has expired".into());
    }
    Ok(())
}

/// Takes a COSE_Sign1 envelope apart (RFC 9052), checking its protected header.
fn parse_cose(envelope: &[u8], now: SystemTime) -> Result<Envelope, String> {
    use ciborium::Value as Cbor;
    let bad = |why: &str| format!("its COSE envelope {why}");
    let mut value: Cbor = ciborium::de::from_reader(envelope).map_err(|_| bad("is not CBOR"))?;
    if let Cbor::Tag(18, inner) = value {
        value = *inner;
    }
    let Cbor::Array(parts) = value else {
        return Err(bad("is not a COSE_Sign1 array"));
    };
    let [
        Cbor::Bytes(protected_bytes),
        Cbor::Map(unprotected),
        Cbor::Bytes(payload),
        Cbor::Bytes(signature),
    ] = parts.as_slice()
    else {
        return Err(bad("is not a COSE_Sign1 array of four"));
    };
    let protected: Cbor = ciborium::de::from_reader(protected_bytes.as_slice())
        .map_err(|_| bad("has a protected header that is not CBOR"))?;
    let Cbor::Map(protected) = protected else {
        return Err(bad("has a protected header that is not a map"));
    };
    let get = |map: &[(Cbor, Cbor)], key: &Cbor| {
        map.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let text = |v: Option<Cbor>| match v {
        Some(Cbor::Text(t)) => Some(t),
        _ => None,
    };
    let alg = match get(&protected, &Cbor::Integer(1.into())) {
        Some(Cbor::Integer(i)) => match i128::from(i) {
            -37 => "PS256",
            -38 => "PS384",
            -39 => "PS512",
            -7 => "ES256",
            other => {
                return Err(format!(
                    "its COSE algorithm {other} is not supported by wasmbox yet"
                ));
            }
        },
        _ => return Err(bad("names no algorithm")),
    };
    let crit: Vec<String> = match get(&protected, &Cbor::Integer(2.into())) {
        Some(Cbor::Array(items)) => items.into_iter().filter_map(|i| text(Some(i))).collect(),
        _ => Vec::new(),
    };
    let crit: Vec<&str> = crit.iter().map(String::as_str).collect();
    let content_type = text(get(&protected, &Cbor::Integer(3.into())));
    let scheme = text(get(&protected, &Cbor::Text(SIGNING_SCHEME.into())));
    let expiry = match get(&protected, &Cbor::Text(EXPIRY.into())) {
        Some(Cbor::Tag(1, t)) => match *t {
            Cbor::Integer(secs) => u64::try_from(i128::from(secs))
                .ok()
                .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)),
            _ => return Err(bad("has an expiry that is not a time")),
        },
        None => None,
        Some(_) => return Err(bad("has an expiry that is not a time")),
    };
    check_header(
        content_type.as_deref(),
        scheme.as_deref(),
        &crit,
        expiry,
        now,
    )?;
    let chain = match get(unprotected, &Cbor::Integer(33.into())) {
        Some(Cbor::Bytes(one)) => vec![one],
        Some(Cbor::Array(items)) => items
            .into_iter()
            .filter_map(|i| match i {
                Cbor::Bytes(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // What the signature covers: Sig_structure ["Signature1", protected, h'', payload].
    let structure = Cbor::Array(vec![
        Cbor::Text("Signature1".into()),
        Cbor::Bytes(protected_bytes.clone()),
        Cbor::Bytes(Vec::new()),
        Cbor::Bytes(payload.clone()),
    ]);
    let mut message = Vec::new();
    ciborium::ser::into_writer(&structure, &mut message)
        .map_err(|_| bad("cannot be re-encoded"))?;
    Ok(Envelope {
        alg: alg.to_string(),
        message,
        signature: signature.clone(),
        chain,
        payload: payload.clone(),
    })
}

/// Verifies one envelope (`media_type` JWS or COSE); `Ok` is the signer's subject.
fn verify_envelope(
    media_type: &str,
    bytes: &[u8],
    digest: &str,
    statement: &PolicyStatement,
    now: SystemTime,
) -> Result<String, String> {
    let envelope = match media_type {
        MEDIA_TYPE_JWS => parse_jws(bytes, now)?,
        MEDIA_TYPE_COSE => parse_cose(bytes, now)?,
        other => {
            return Err(format!(
                "its notation signature is a {other} envelope, which is neither JWS nor COSE"
            ));
        }
    };
    let chain = envelope.chain;
    // Integrity: the signature, with the leaf's key.
    let leaf_der = chain
        .first()
        .ok_or("its envelope has no certificate chain")?;
    let leaf = Certificate::from_der(leaf_der)
        .map_err(|_| "its signing certificate is not X.509".to_string())?;
    let spki = leaf
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| "its signing certificate has no public key".to_string())?;
    if !verify_signature(&envelope.alg, &spki, &envelope.message, &envelope.signature)? {
        return Err("its signature does not verify with its signing certificate's key".into());
    }
    // It signs this image.
    let payload: Value = serde_json::from_slice(&envelope.payload)
        .map_err(|_| "its payload is not JSON".to_string())?;
    let signed = payload
        .pointer("/targetArtifact/digest")
        .and_then(Value::as_str)
        .unwrap_or("");
    if signed != digest {
        return Err(format!("its signature names another image, {signed}"));
    }
    // Authenticity: the chain, leaf first, each certificate issued and
    // signed by the next, reaches a certificate the trust store holds; every
    // certificate up to it is valid now.
    let anchored = chain
        .iter()
        .position(|c| statement.certificates.contains(c))
        .ok_or("its signing certificate does not chain to the trust policy's trust stores")?;
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    for (i, der) in chain[..=anchored].iter().enumerate() {
        let cert = Certificate::from_der(der)
            .map_err(|_| "a certificate of its chain is not X.509".to_string())?;
        let validity = &cert.tbs_certificate.validity;
        if now_unix < validity.not_before.to_unix_duration()
            || now_unix > validity.not_after.to_unix_duration()
        {
            return Err(format!(
                "{} is not valid now (expired or not yet valid)",
                if i == 0 {
                    "its signing certificate".to_string()
                } else {
                    format!("certificate {i} of its chain")
                }
            ));
        }
        if i < anchored {
            let issuer = Certificate::from_der(&chain[i + 1])
                .map_err(|_| "a certificate of its chain is not X.509".to_string())?;
            if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject
                || !is_ca(&issuer)
                || !issued_by(&cert, &issuer)
            {
                return Err(format!(
                    "certificate {i} of its chain is not issued and signed by certificate {} (a CA)",
                    i + 1
                ));
            }
        }
    }
    let subject = leaf.tbs_certificate.subject.to_string();
    let trusted = statement.identities.iter().any(|id| {
        id == "*"
            || id
                .strip_prefix("x509.subject:")
                .is_some_and(|dn| same_dn(dn.trim(), &subject))
    });
    if !trusted {
        return Err(format!(
            "its signer {subject} is not among the trust policy's trusted identities"
        ));
    }
    Ok(subject)
}

/// Whether `cert` says it is a CA (basicConstraints cA = true).
fn is_ca(cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::BasicConstraints;
    cert.tbs_certificate
        .get::<BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, bc)| bc.ca)
}

/// Whether `issuer`'s key signed `cert` (RSA PKCS#1 v1.5 or ECDSA P-256,
/// with SHA-256/384/512).
fn issued_by(cert: &Certificate, issuer: &Certificate) -> bool {
    use rsa::signature::Verifier as _;
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Ok(spki) = issuer.tbs_certificate.subject_public_key_info.to_der() else {
        return false;
    };
    let Some(signature) = cert.signature.as_bytes() else {
        return false;
    };
    let rsa_key = || rsa::RsaPublicKey::from_public_key_der(&spki).ok();
    let sig = || rsa::pkcs1v15::Signature::try_from(signature).ok();
    match cert.signature_algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.11" => rsa_key().zip(sig()).is_some_and(|(k, s)| {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k)
                .verify(&tbs, &s)
                .is_ok()
        }),
        "1.2.840.113549.1.1.12" => rsa_key().zip(sig()).is_some_and(|(k, s)| {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(k)
                .verify(&tbs, &s)
                .is_ok()
        }),
        "1.2.840.113549.1.1.13" => rsa_key().zip(sig()).is_some_and(|(k, s)| {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(k)
                .verify(&tbs, &s)
                .is_ok()
        }),
        "1.2.840.10045.4.3.2" => p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
            .ok()
            .zip(p256::ecdsa::Signature::from_der(signature).ok())
            .is_some_and(|(k, s)| k.verify(&tbs, &s).is_ok()),
        _ => false,
    }
}

/// Distinguished names compared as sets of `TYPE=value` (order and spaces aside).
fn same_dn(a: &str, b: &str) -> bool {
    let set = |s: &str| {
        let mut parts: Vec<String> = s.split(',').map(|p| p.trim().replace(" = ", "=")).collect();
        parts.sort();
        parts
    };
    set(a) == set(b)
}

fn verify_signature(
    alg: &str,
    spki: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    use rsa::signature::Verifier as _;
    let rsa_key = || {
        rsa::RsaPublicKey::from_public_key_der(spki)
            .map_err(|_| format!("its {alg} signature is made with a key that is not RSA"))
    };
    Ok(match alg {
        "PS256" | "PS384" | "PS512" => {
            let key = rsa_key()?;
            let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                return Ok(false);
            };
            match alg {
                "PS256" => rsa::pss::VerifyingKey::<sha2::Sha256>::new(key)
                    .verify(message, &sig)
                    .is_ok(),
                "PS384" => rsa::pss::VerifyingKey::<sha2::Sha384>::new(key)
                    .verify(message, &sig)
                    .is_ok(),
                _ => rsa::pss::VerifyingKey::<sha2::Sha512>::new(key)
                    .verify(message, &sig)
                    .is_ok(),
            }
        }
        "ES256" => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).map_err(|_| {
                "its ES256 signature is made with a key that is not P-256".to_string()
            })?;
            // JWS carries ECDSA signatures as r‖s.
            let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
                return Ok(false);
            };
            key.verify(message, &sig).is_ok()
        }
        other => {
            return Err(format!(
                "its signature algorithm {other} is not supported by wasmbox yet (PS256/384/512 and ES256 are)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/notation");
    const DIGEST: &str = "sha256:be023cadd423f27cf78d513df0b5d95c4900b8247c4da3d96e1241c9ff13e466";

    /// notation's config directory holding the sample's certificate.
    fn config_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("truststore/x509/ca/wasmbox-test");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::copy(
            format!("{DATA}/wasmbox-test.crt"),
            store.join("wasmbox-test.crt"),
        )
        .unwrap();
        std::fs::copy(
            format!("{DATA}/trustpolicy.json"),
            dir.path().join("trustpolicy.json"),
        )
        .unwrap();
        dir
    }

    /// When the sample was made: its certificate is valid for a day from then.
    fn signing_day() -> SystemTime {
        humantime::parse_rfc3339("2026-12-05T07:00:00Z").unwrap()
    }

    fn envelope() -> Vec<(String, Vec<u8>)> {
        vec![(
            MEDIA_TYPE_JWS.into(),
            std::fs::read(format!("{DATA}/envelope.jws.json")).unwrap(),
        )]
    }

    #[test]
    fn a_jws_envelope_from_notation_verifies_against_its_trust_store() {
        let dir = config_dir();
        let policy = TrustPolicy::load(dir.path()).unwrap();
        let ok = policy
            .check("r.io/app", DIGEST, &envelope(), signing_day())
            .unwrap();
        assert!(ok.contains("CN=wasmbox-test"), "{ok}");
        // Another digest, a later day, an empty trust store: refused.
        let other = format!("sha256:{}", "0".repeat(64));
        let err = policy
            .check("r.io/app", &other, &envelope(), signing_day())
            .unwrap_err()
            .to_string();
        assert!(err.contains("names another image"), "{err}");
        let later = signing_day() + std::time::Duration::from_secs(3 * 86400);
        let err = policy
            .check("r.io/app", DIGEST, &envelope(), later)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid now"), "{err}");
        std::fs::remove_file(
            dir.path()
                .join("truststore/x509/ca/wasmbox-test/wasmbox-test.crt"),
        )
        .unwrap();
        let policy = TrustPolicy::load(dir.path()).unwrap();
        let err = policy
            .check("r.io/app", DIGEST, &envelope(), signing_day())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not chain to the trust policy's trust stores"),
            "{err}"
        );
    }

    #[test]
    fn an_envelope_wasmbox_signs_verifies_like_notations() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_pem(
            &std::fs::read(format!("{DATA}/wasmbox-test.key")).unwrap(),
            b"",
            "k",
        )
        .unwrap();
        let chain = certificate_chain(
            &std::fs::read(format!("{DATA}/wasmbox-test.crt")).unwrap(),
            "c",
        )
        .unwrap();
        let subject = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 533});
        let envelope = jws_envelope(&key, &chain, &subject, signing_day()).unwrap();
        let config = config_dir();
        let policy = TrustPolicy::load(config.path()).unwrap();
        let ok = policy
            .check(
                "r.io/app",
                DIGEST,
                &[(MEDIA_TYPE_JWS.into(), envelope)],
                signing_day(),
            )
            .unwrap();
        assert!(ok.contains("CN=wasmbox-test"), "{ok}");
        // A certificate that is not the key's is refused before anything is signed.
        let other = SigningKey::P256(crate::PrivateKey::generate());
        let err = jws_envelope(&other, &chain, &subject, signing_day())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is not the signing key's"), "{err}");
        drop(dir);
    }

    /// `openssl ARGS` in `dir`.
    fn openssl(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed (make deps)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_chain_through_a_ca_in_the_trust_store_verifies_link_by_link() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-subj",
                    &format!("/CN={ca}"),
                    "-days",
                    "2",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            );
        }
        openssl(
            d,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
                "-subj", "/CN=leaf",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.crt",
                "-days",
                "1",
            ],
        );
        let store = d.join("config/truststore/x509/ca/corp");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::copy(d.join("ca.crt"), store.join("ca.crt")).unwrap();
        std::fs::write(
            d.join("config/trustpolicy.json"),
            r#"{"version":"1.0","trustPolicies":[{"name":"corp","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:corp"],"trustedIdentities":["x509.subject: CN=leaf"]}]}"#,
        )
        .unwrap();
        let policy = TrustPolicy::load(&d.join("config")).unwrap();
        let key =
            SigningKey::from_pem(&std::fs::read(d.join("leaf.key")).unwrap(), b"", "leaf.key")
                .unwrap();
        let pem =
            |name: &str| certificate_chain(&std::fs::read(d.join(name)).unwrap(), name).unwrap();
        let subject = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 533});
        let check = |chain: Vec<Vec<u8>>| {
            let envelope = jws_envelope(&key, &chain, &subject, SystemTime::now()).unwrap();
            policy.check(
                "r.io/app",
                DIGEST,
                &[(MEDIA_TYPE_JWS.into(), envelope)],
                SystemTime::now(),
            )
        };
        let leaf_and_ca = [pem("leaf.crt"), pem("ca.crt")].concat();
        assert!(check(leaf_and_ca).unwrap().contains("CN=leaf"));
        // Without the CA in x5c there is no chain to the store...
        let err = check(pem("leaf.crt")).unwrap_err().to_string();
        assert!(err.contains("does not chain"), "{err}");
        // ...and another CA's certificate under the store's name breaks a link.
        let forged = [pem("leaf.crt"), pem("other-ca.crt")].concat();
        std::fs::copy(d.join("other-ca.crt"), store.join("other.crt")).unwrap();
        let policy_with_other = TrustPolicy::load(&d.join("config")).unwrap();
        let envelope = jws_envelope(&key, &forged, &subject, SystemTime::now()).unwrap();
        let err = policy_with_other
            .check(
                "r.io/app",
                DIGEST,
                &[(MEDIA_TYPE_JWS.into(), envelope)],
                SystemTime::now(),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("certificate 0 of its chain is not issued and signed by certificate 1"),
            "{err}"
        );
    }

    #[test]
    fn a_cose_envelope_from_notation_verifies_too() {
        let dir = config_dir();
        let policy = TrustPolicy::load(dir.path()).unwrap();
        let cose = std::fs::read(format!("{DATA}/envelope.cose")).unwrap();
        // The COSE sample signs the sample image's digest of its own run.
        let digest = "sha256:be023cadd423f27cf78d513df0b5d95c4900b8247c4da3d96e1241c9ff13e466";
        let got = policy.check(
            "r.io/app",
            digest,
            &[(MEDIA_TYPE_COSE.into(), cose.clone())],
            signing_day(),
        );
        assert!(
            got.as_ref().is_ok_and(|ok| ok.contains("CN=wasmbox-test")),
            "{got:?}"
        );
        let mut flipped = cose;
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = policy
            .check(
                "r.io/app",
                digest,
                &[(MEDIA_TYPE_COSE.into(), flipped)],
                signing_day(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn a_tampered_envelope_fails_integrity() {
        let dir = config_dir();
        let policy = TrustPolicy::load(dir.path()).unwrap();
        let mut v: Value = serde_json::from_slice(&envelope()[0].1).unwrap();
        let other = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"targetArtifact":{{"digest":"sha256:{}","mediaType":"x","size":1}}}}"#,
            "1".repeat(64)
        ));
        v["payload"] = Value::String(other);
        let tampered = vec![(MEDIA_TYPE_JWS.to_string(), serde_json::to_vec(&v).unwrap())];
        let err = policy
            .check("r.io/app", DIGEST, &tampered, signing_day())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
    }
}
