//! Running a [`Policy`] against one image: the requirements of its scope,
//! each of which must accept, with signatures fetched through a
//! [`SignatureSource`] the caller implements over its registry client.

use std::future::Future;

use crate::TrustError;
use crate::cosign::{self, Candidate};
use crate::policy::{Policy, Requirement, SignedIdentity};
use crate::reference::DockerRef;
use crate::referrers;

/// A repository in a registry, as much of it as verification reads.
pub trait SignatureSource {
    /// The manifest `reference` (a tag or a digest) names, or `None` if the
    /// registry has none.
    fn manifest(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, TrustError>> + Send;
    /// A blob, checked against its digest, at most `max_bytes`.
    fn blob(
        &self,
        digest: &str,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<u8>, TrustError>> + Send;
    /// The digests of the manifests that refer to `digest`: the referrers
    /// API's list where the registry offers it, else the `sha256-<hex>`
    /// tag's (none if that tag does not exist).
    fn referrers(
        &self,
        digest: &str,
    ) -> impl Future<Output = Result<Vec<String>, TrustError>> + Send;
}

/// Why an image may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The scope whose requirements applied (`default` for the policy's default).
    pub scope: String,
    /// One line per requirement that accepted.
    pub accepted_by: Vec<String>,
}

/// The most referrers (and `.sig` layers) read for one image: a registry
/// listing thousands cannot make a create wait on thousands of requests.
pub const MAX_REFERRERS: usize = 64;

/// The layers of the referrers of `digest` whose artifact type is
/// `artifact_type`, each read whole: `(layer media type, content)`.
async fn referrer_layers<S: SignatureSource>(
    source: &S,
    digest: &str,
    artifact_type: &str,
) -> Result<Vec<(String, Vec<u8>)>, TrustError> {
    let mut found = Vec::new();
    for rd in source
        .referrers(digest)
        .await?
        .into_iter()
        .take(MAX_REFERRERS)
    {
        let Some(manifest) = source.manifest(&rd).await? else {
            continue;
        };
        if referrers::artifact_type_of(&manifest).as_deref() != Some(artifact_type) {
            continue;
        }
        let m: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest).map_err(|e| {
            TrustError::Malformed(format!("the signature {rd} is not an image manifest ({e})"))
        })?;
        for layer in m.layers() {
            let content = source
                .blob(layer.digest().as_ref(), cosign::MAX_SIGNATURE_BYTES)
                .await?;
            found.push((layer.media_type().to_string(), content));
        }
    }
    Ok(found)
}

/// Every cosign signature of `digest`, in either form, unchecked.
pub async fn cosign_signatures<S: SignatureSource>(
    source: &S,
    digest: &str,
) -> Result<Vec<Candidate>, TrustError> {
    let mut found = Vec::new();
    for (media_type, bundle) in referrer_layers(source, digest, cosign::MEDIA_TYPE_BUNDLE).await? {
        if media_type == cosign::MEDIA_TYPE_BUNDLE {
            // A bundle that cannot be read is no signature; others may be.
            found.extend(cosign::bundle_candidates(&bundle).unwrap_or_default());
        }
    }
    if let Some(manifest) = source.manifest(&cosign::legacy_tag(digest)).await? {
        for (layer, signature) in cosign::legacy_layers(&manifest)?
            .into_iter()
            .take(MAX_REFERRERS)
        {
            let payload = source
                .blob(layer.digest().as_ref(), cosign::MAX_SIGNATURE_BYTES)
                .await?;
            found.extend(cosign::legacy_candidate(payload, signature));
        }
    }
    Ok(found)
}

/// Every notation signature envelope of `digest`: `(media type, envelope)`.
pub async fn notation_envelopes<S: SignatureSource>(
    source: &S,
    digest: &str,
) -> Result<Vec<(String, Vec<u8>)>, TrustError> {
    referrer_layers(source, digest, crate::notation::ARTIFACT_TYPE_SIGNATURE).await
}

/// Checks `image` (a reference with the manifest digest it resolved to,
/// `digest`) against `policy`. `Err(Refused)` says, in one sentence, why
/// it may not run.
pub async fn check<S: SignatureSource>(
    policy: &Policy,
    image: &DockerRef,
    digest: &str,
    source: &S,
) -> Result<Verdict, TrustError> {
    let applicable = policy.applicable(image);
    let scope_name = match applicable.scope {
        Some("") => "the docker transport's default".to_string(),
        Some(s) => s.to_string(),
        None => "default".to_string(),
    };
    // Messages name the image by digest and the policy by the repository,
    // the names a user looks for.
    let pinned = image.with_digest(digest);
    let mut accepted_by = Vec::new();
    let mut signatures: Option<Vec<Candidate>> = None;
    for requirement in applicable.requirements {
        match requirement {
            Requirement::InsecureAcceptAnything => {
                accepted_by.push("insecureAcceptAnything".to_string());
            }
            Requirement::Reject => {
                return Err(TrustError::Refused(format!(
                    "image {pinned} is rejected by the policy for {} (scope {scope_name}: reject)",
                    image.name
                )));
            }
            Requirement::Unsupported(why) => {
                return Err(TrustError::Refused(format!(
                    "image {pinned} cannot be checked against the policy for {}: {why}",
                    image.name
                )));
            }
            Requirement::SigstoreSigned { keys, identity } => {
                if signatures.is_none() {
                    signatures = Some(cosign_signatures(source, digest).await?);
                }
                let found = signatures.as_deref().unwrap_or_default();
                match judge(found, keys, identity, image, digest) {
                    Ok(line) => accepted_by.push(line),
                    Err(why) => {
                        return Err(TrustError::Refused(format!(
                            "image {pinned} is not signed by a key that the policy for {} accepts ({why})",
                            image.name
                        )));
                    }
                }
            }
        }
    }
    Ok(Verdict {
        scope: scope_name,
        accepted_by,
    })
}

/// The first signature that one of `keys` made over `digest` for an
/// identity the policy accepts; else the closest reason none did.
fn judge(
    found: &[Candidate],
    keys: &[crate::PublicKey],
    identity: &SignedIdentity,
    image: &DockerRef,
    digest: &str,
) -> Result<String, String> {
    if found.is_empty() {
        return Err("it has no cosign signature".into());
    }
    let mut reason = format!(
        "none of its {} signature{} verifies with the policy's key{}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        if keys.len() == 1 { "" } else { "s" }
    );
    for c in found {
        let Some(key) = keys.iter().find(|k| k.verifies(&c.message, &c.signature)) else {
            continue;
        };
        if !c.digests.iter().any(|d| d == digest) {
            reason = format!(
                "its signature by the policy's key names another image, {}",
                c.digests.first().map_or("none", String::as_str)
            );
            continue;
        }
        // A bundle names no repository: it stands for the repository it
        // is stored in, as a name-only claim (what cosign's payloads say).
        let signed = c.identity.clone().unwrap_or_else(|| DockerRef {
            name: image.name.clone(),
            tag: None,
            digest: None,
        });
        if !identity.accepts(image, &signed) {
            let hint = if signed.tag.is_none() && signed.digest.is_none() {
                "; cosign signatures name only a repository, which needs \"signedIdentity\": {\"type\": \"matchRepository\"}"
            } else {
                ""
            };
            reason = format!(
                "its signature by the policy's key claims {signed}, which signedIdentity {} does not accept for {image}{hint}",
                identity.name()
            );
            continue;
        }
        return Ok(format!("{} by key {}", c.form, &cosign::key_hint(key)));
    }
    Err(reason)
}
