//! The two ways cosign stores a keyed signature of an image, both read and
//! written here:
//!
//! * **bundle** (cosign 3's default): an OCI 1.1 referrer of artifact type
//!   `application/vnd.dev.sigstore.bundle.v0.3+json` whose one layer is a
//!   sigstore bundle: a DSSE envelope over an in-toto statement whose subject
//!   is the image's manifest digest (predicate `https://sigstore.dev/cosign/sign/v1`).
//! * **legacy** (cosign ≤ 2, and what containers/image — podman, skopeo,
//!   CRI-O — reads): the tag `sha256-<hex>.sig` holding a manifest whose
//!   layers are simple-signing payloads naming the digest and the
//!   repository, each with its signature in an annotation.
//!
//! Signatures are ECDSA P-256 over SHA-256 (of the payload; of the DSSE
//! pre-authentication encoding for bundles), ASN.1 DER, base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use oci_spec::image::Descriptor;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::TrustError;
use crate::keys::{PrivateKey, PublicKey};
use crate::reference::DockerRef;

pub const MEDIA_TYPE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const MEDIA_TYPE_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
pub const PREDICATE_COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";
pub const PAYLOAD_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// Most bytes read for one payload or bundle.
pub const MAX_SIGNATURE_BYTES: usize = 1 << 20;

/// Which of cosign's two forms a signature came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Bundle,
    Legacy,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Form::Bundle => "cosign bundle",
            Form::Legacy => "cosign .sig tag",
        })
    }
}

/// A signature found for an image, not yet checked: what was signed, the
/// signature, and what the signed content claims.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub form: Form,
    /// The bytes the signature covers.
    pub message: Vec<u8>,
    pub signature: Vec<u8>,
    /// The manifest digests the signed content names.
    pub digests: Vec<String>,
    /// The repository the signed content names (legacy payloads only: a
    /// bundle's statement names none).
    pub identity: Option<DockerRef>,
}

/// The tag cosign's legacy form uses for `digest`.
pub fn legacy_tag(digest: &str) -> String {
    format!("{}.sig", crate::referrers::fallback_tag(digest))
}

/// The simple-signing payload cosign signs: `repository` is the identity
/// (cosign writes the repository without tag or digest).
pub fn simple_signing_payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIMPLE_SIGNING_TYPE,
        },
        "optional": null,
    }))
    .expect("JSON serializes")
}

/// Reads a legacy `.sig` manifest's layers: `(payload descriptor, signature)`.
pub fn legacy_layers(manifest: &[u8]) -> Result<Vec<(Descriptor, Vec<u8>)>, TrustError> {
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(manifest).map_err(|e| {
        TrustError::Malformed(format!("the .sig manifest is not an image manifest ({e})"))
    })?;
    let mut out = Vec::new();
    for layer in m.layers() {
        if layer.media_type().to_string() != MEDIA_TYPE_SIMPLE_SIGNING {
            continue;
        }
        let Some(sig) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SIGNATURE))
        else {
            continue;
        };
        let Ok(sig) = B64.decode(sig.trim()) else {
            continue;
        };
        out.push((layer.clone(), sig));
    }
    Ok(out)
}

/// A candidate from a legacy payload and its signature.
pub fn legacy_candidate(payload: Vec<u8>, signature: Vec<u8>) -> Option<Candidate> {
    let v: Value = serde_json::from_slice(&payload).ok()?;
    if v.pointer("/critical/type").and_then(Value::as_str) != Some(SIMPLE_SIGNING_TYPE) {
        return None;
    }
    let digest = v
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(Value::as_str)?
        .to_string();
    let identity = v
        .pointer("/critical/identity/docker-reference")
        .and_then(Value::as_str)
        .and_then(DockerRef::parse);
    Some(Candidate {
        form: Form::Legacy,
        message: payload,
        signature,
        digests: vec![digest],
        identity,
    })
}

/// The legacy `.sig` manifest and its config for `layers` (each a payload
/// descriptor carrying its signature annotation), as cosign writes them.
pub fn legacy_manifest(layers: &[Descriptor]) -> (Vec<u8>, Vec<u8>) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest().to_string()).collect();
    let history: Vec<Value> = layers
        .iter()
        .map(|_| json!({"created": "0001-01-01T00:00:00Z"}))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": history,
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .expect("JSON serializes");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": wasmbox_format::MEDIA_TYPE_OCI_MANIFEST,
        "config": {
            "mediaType": wasmbox_format::MEDIA_TYPE_OCI_CONFIG,
            "size": config.len(),
            "digest": wasmbox_format::Digest::of(&config).to_string(),
        },
        "layers": layers,
    }))
    .expect("JSON serializes");
    (manifest, config)
}

/// A payload layer descriptor carrying `signature`.
pub fn legacy_layer(payload: &[u8], signature: &[u8]) -> Descriptor {
    serde_json::from_value(json!({
        "mediaType": MEDIA_TYPE_SIMPLE_SIGNING,
        "size": payload.len(),
        "digest": wasmbox_format::Digest::of(payload).to_string(),
        "annotations": {ANNOTATION_SIGNATURE: B64.encode(signature)},
    }))
    .expect("a valid descriptor")
}

/// DSSE's pre-authentication encoding, what a DSSE signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A sigstore bundle (v0.3) signing `digest` with `key`, as `cosign sign` writes it.
pub fn bundle(key: &PrivateKey, digest: &str) -> Result<Vec<u8>, TrustError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| TrustError::Malformed(format!("{digest} is not a digest")))?;
    let statement = serde_json::to_vec(&json!({
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": [{"digest": {alg: hex}, "annotations": {}}],
        "predicateType": PREDICATE_COSIGN_SIGN,
        "predicate": {},
    }))
    .expect("JSON serializes");
    let signature = key.sign(&pae(PAYLOAD_TYPE_IN_TOTO, &statement));
    Ok(serde_json::to_vec(&json!({
        "mediaType": MEDIA_TYPE_BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(&key.public_key())}},
        "dsseEnvelope": {
            "payload": B64.encode(&statement),
            "payloadType": PAYLOAD_TYPE_IN_TOTO,
            "signatures": [{"sig": B64.encode(signature)}],
        },
    }))
    .expect("JSON serializes"))
}

/// The key hint cosign puts in a bundle: base64 of SHA-256 of the PKIX DER.
pub fn key_hint(key: &PublicKey) -> String {
    B64.encode(Sha256::digest(key.to_der()))
}

/// The candidates in a bundle's DSSE envelope (one per signature). Bundles
/// whose statement is not a cosign signature (attestations) give none.
pub fn bundle_candidates(bundle: &[u8]) -> Result<Vec<Candidate>, TrustError> {
    let bad = |why: &str| TrustError::Malformed(format!("a sigstore bundle {why}"));
    let v: Value = serde_json::from_slice(bundle).map_err(|_| bad("is not JSON"))?;
    let Some(envelope) = v.get("dsseEnvelope") else {
        // A message-signature bundle (blob signing) is not an image signature.
        return Ok(Vec::new());
    };
    let payload_type = envelope
        .get("payloadType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("has no payloadType"))?;
    let payload = envelope
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| B64.decode(p).ok())
        .ok_or_else(|| bad("has no base64 payload"))?;
    if payload_type != PAYLOAD_TYPE_IN_TOTO {
        return Ok(Vec::new());
    }
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|_| bad("has a payload that is not JSON"))?;
    if statement.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_COSIGN_SIGN) {
        return Ok(Vec::new());
    }
    let digests: Vec<String> = statement
        .get("subject")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| s.pointer("/digest/sha256").and_then(Value::as_str))
                .map(|hex| format!("sha256:{hex}"))
                .collect()
        })
        .unwrap_or_default();
    let message = pae(payload_type, &payload);
    let signatures = envelope
        .get("signatures")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no signatures"))?;
    Ok(signatures
        .iter()
        .filter_map(|s| s.get("sig").and_then(Value::as_str))
        .filter_map(|s| B64.decode(s).ok())
        .map(|signature| Candidate {
            form: Form::Bundle,
            message: message.clone(),
            signature,
            digests: digests.clone(),
            identity: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cosign");

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(format!("{SAMPLES}/{name}")).unwrap()
    }

    #[test]
    fn a_bundle_written_by_cosign_3_verifies_with_its_key() {
        let key = PublicKey::from_pem(&sample("cosign.pub"), "cosign.pub").unwrap();
        let candidates = bundle_candidates(&sample("bundle.json")).unwrap();
        assert_eq!(candidates.len(), 1);
        let c = &candidates[0];
        assert!(key.verifies(&c.message, &c.signature));
        assert_eq!(
            c.digests,
            ["sha256:ed3de3a870f47fc273e709b2bbade85d0d1c5376e5c629d4adbfee7271492bc2"]
        );
        assert!(
            !PrivateKey::generate()
                .public_key()
                .verifies(&c.message, &c.signature)
        );
        let v: Value = serde_json::from_slice(&sample("bundle.json")).unwrap();
        assert_eq!(
            v.pointer("/verificationMaterial/publicKey/hint").unwrap(),
            &json!(key_hint(&key))
        );
    }

    #[test]
    fn a_legacy_signature_written_by_cosign_verifies_with_its_key() {
        let key = PublicKey::from_pem(&sample("cosign.pub"), "cosign.pub").unwrap();
        let layers = legacy_layers(&sample("sig-manifest.json")).unwrap();
        assert_eq!(layers.len(), 1);
        let payload = sample("simplesigning-payload.json");
        assert_eq!(
            layers[0].0.digest().to_string(),
            wasmbox_format::Digest::of(&payload).to_string()
        );
        let c = legacy_candidate(payload, layers[0].1.clone()).unwrap();
        assert!(key.verifies(&c.message, &c.signature));
        assert_eq!(c.identity.unwrap().name, "127.0.0.1:55263/legacy");
    }

    #[test]
    fn what_wasmbox_writes_reads_back_as_the_same_claims() {
        let key = PrivateKey::generate();
        let digest = format!("sha256:{}", "d".repeat(64));
        let c = &bundle_candidates(&bundle(&key, &digest).unwrap()).unwrap()[0];
        assert!(key.public_key().verifies(&c.message, &c.signature));
        assert_eq!(c.digests, std::slice::from_ref(&digest));
        let payload = simple_signing_payload("r.io/app", &digest);
        let layer = legacy_layer(&payload, &key.sign(&payload));
        let (manifest, _config) = legacy_manifest(std::slice::from_ref(&layer));
        let (_, sig) = &legacy_layers(&manifest).unwrap()[0];
        let c = legacy_candidate(payload, sig.clone()).unwrap();
        assert!(key.public_key().verifies(&c.message, &c.signature));
        assert_eq!(c.digests, [digest]);
    }
}
