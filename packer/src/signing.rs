//! `wasmbox sign` and `wasmbox verify` against a registry: the formats and
//! the policy are `wasmbox-trust`'s; this module moves them over the wire.

use std::path::Path;

use anyhow::{Context, Result, bail};
use oci_spec::image::Descriptor;
use serde_json::json;
use wasmbox_trust::{DockerRef, Policy, PrivateKey, Verdict, cosign};

use crate::format;
use crate::reference::ImageRef;
use crate::referrers::{Repository, attach};
use crate::registry::Registry;

/// Which of cosign's forms `wasmbox sign` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureForms {
    /// cosign 3's sigstore bundle referrer only.
    Bundle,
    /// The `sha256-<hex>.sig` tag only (cosign ≤ 2, podman, skopeo, CRI-O).
    Legacy,
    /// Both, so every verifier finds one.
    Both,
}

/// What `sign` wrote.
#[derive(Debug)]
pub struct Signed {
    /// The manifest digest signed.
    pub digest: String,
    /// One line per artifact written (`bundle sha256:…`, `tag sha256-….sig`).
    pub written: Vec<String>,
}

/// Signs the manifest `name` resolves to as `notation sign` does: a JWS
/// envelope referrer, with `key` and its certificate `chain` (leaf first).
pub async fn sign_notation(
    registry: &Registry,
    name: &ImageRef,
    key: &wasmbox_trust::notation::SigningKey,
    chain: &[Vec<u8>],
) -> Result<Signed> {
    use wasmbox_trust::notation;
    let repo = Repository::new(registry, name);
    let subject = repo.resolve().await?;
    let envelope = notation::jws_envelope(
        key,
        chain,
        &serde_json::to_value(&subject)?,
        std::time::SystemTime::now(),
    )?;
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let thumbprints = notation::chain_thumbprints(chain);
    let at = attach(
        &repo,
        &subject,
        notation::ARTIFACT_TYPE_SIGNATURE,
        notation::MEDIA_TYPE_JWS,
        None,
        &envelope,
        &[
            (notation::ANNOTATION_THUMBPRINTS, thumbprints.as_str()),
            ("org.opencontainers.image.created", created.as_str()),
        ],
    )
    .await
    .with_context(|| format!("storing the notation signature of {name}"))?;
    Ok(Signed {
        digest: subject.digest().to_string(),
        written: vec![format!("notation signature {at}")],
    })
}

/// Signs the manifest `name` resolves to with `key`, in `forms`.
pub async fn sign(
    registry: &Registry,
    name: &ImageRef,
    key: &PrivateKey,
    forms: SignatureForms,
) -> Result<Signed> {
    let repo = Repository::new(registry, name);
    let subject = repo.resolve().await?;
    let digest = subject.digest().to_string();
    let mut written = Vec::new();
    if forms != SignatureForms::Legacy {
        let bundle = cosign::bundle(key, &digest)?;
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let annotations = [
            ("dev.sigstore.bundle.content", "dsse-envelope"),
            (
                "dev.sigstore.bundle.predicateType",
                cosign::PREDICATE_COSIGN_SIGN,
            ),
            ("org.opencontainers.image.created", created.as_str()),
        ];
        let at = attach(
            &repo,
            &subject,
            cosign::MEDIA_TYPE_BUNDLE,
            cosign::MEDIA_TYPE_BUNDLE,
            None,
            &bundle,
            &annotations,
        )
        .await
        .with_context(|| format!("storing the signature of {name}"))?;
        written.push(format!("bundle {at}"));
    }
    if forms != SignatureForms::Bundle {
        let tag = cosign::legacy_tag(&digest);
        let payload = cosign::simple_signing_payload(
            &DockerRef::parse(name.as_str()).map_or_else(
                || format!("{}/{}", name.registry(), name.reference().repository()),
                |r| r.name,
            ),
            &digest,
        );
        let layer = cosign::legacy_layer(&payload, &key.sign(&payload));
        // A new signature joins those already there, as cosign adds them.
        let mut layers: Vec<Descriptor> = match registry.raw_manifest(&repo.at(&tag)).await? {
            Some(existing) => serde_json::from_slice::<oci_spec::image::ImageManifest>(&existing)
                .with_context(|| format!("{name}'s signature tag {tag} is not an image manifest"))?
                .layers()
                .clone(),
            None => Vec::new(),
        };
        layers.push(layer);
        let (manifest, config) = cosign::legacy_manifest(&layers);
        let target = repo.at(&tag);
        registry.push_blob_bytes(&target, &payload).await?;
        registry.push_blob_bytes(&target, &config).await?;
        registry
            .push_manifest_bytes(&target, &manifest, format::MEDIA_TYPE_OCI_MANIFEST)
            .await
            .with_context(|| format!("storing the signature of {name}"))?;
        written.push(format!("tag {tag}"));
    }
    Ok(Signed { digest, written })
}

/// Checks the image `name` against `policy`: the reference is evaluated as
/// given (as skopeo and podman do), its signatures are those of the digest
/// it resolves to.
pub async fn verify(
    registry: &Registry,
    name: &ImageRef,
    policy: &Policy,
) -> Result<(String, Verdict)> {
    let repo = Repository::new(registry, name);
    let digest = repo.resolve().await?.digest().to_string();
    let Some(image) = DockerRef::parse(name.as_str()) else {
        bail!("{name} is not a reference a policy can scope");
    };
    let verdict = wasmbox_trust::verify::check(policy, &image, &digest, &repo).await?;
    Ok((digest, verdict))
}

/// A policy that accepts what `key` signed, for `wasmbox verify --key`: a
/// signature of the image's digest that names the image's repository
/// (`matchRepository`; cosign itself does not look at the repository).
pub fn key_policy(key_path: &Path) -> Result<Policy> {
    let path = std::fs::canonicalize(key_path)
        .with_context(|| format!("cannot read the key {}", key_path.display()))?;
    let json = json!({
        "default": [{
            "type": "sigstoreSigned",
            "keyPath": path,
            "signedIdentity": {"type": "matchRepository"},
        }],
    });
    Ok(Policy::parse(
        json.to_string().as_bytes(),
        &key_path.display().to_string(),
        None,
    )?)
}

/// Checks the image `name` against notation's trust policy (`notation
/// verify`'s check): a notation signature of the digest it resolves to.
pub async fn verify_notation(
    registry: &Registry,
    name: &ImageRef,
    policy: &wasmbox_trust::notation::TrustPolicy,
) -> Result<(String, String)> {
    let repo = Repository::new(registry, name);
    let digest = repo.resolve().await?.digest().to_string();
    let envelopes = wasmbox_trust::verify::notation_envelopes(&repo, &digest).await?;
    let repository = format!("{}/{}", name.registry(), name.reference().repository());
    let accepted = policy.check(
        &repository,
        &digest,
        &envelopes,
        std::time::SystemTime::now(),
    )?;
    Ok((digest, accepted))
}
