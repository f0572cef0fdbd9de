//! The run-time policy: before a container is created, the image
//! containerd pinned for it is checked against the containers/image
//! `policy.json` named by `WASMBOX_POLICY` in containerd's environment. No
//! policy, no check (the behaviour before policies existed).
//!
//! Verdicts that accept are cached per policy, image name and digest for
//! [`CACHE_TTL`], so a node starting the same image again does not ask the
//! registry again; refusals are not cached (a signature may arrive).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest as _, Sha256};
use wasmbox::reference::ImageRef;
use wasmbox::referrers::Repository;
use wasmbox::registry::{Registry, RegistryOptions};
use wasmbox_trust::{DockerRef, Policy, TrustError};

use crate::content::ImageSource;

/// The environment variable naming the policy file.
pub const POLICY_ENV: &str = "WASMBOX_POLICY";
/// Where accepted verdicts are kept (a directory), overriding [`CACHE_DIR`].
pub const CACHE_DIR_ENV: &str = "WASMBOX_VERIFIED_DIR";
/// On tmpfs: verdicts do not outlive a boot.
pub const CACHE_DIR: &str = "/run/wasmbox/verified";
/// How long an accepting verdict is reused before the registry is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(3600);

/// The policy this shim enforces, if one is configured.
pub fn configured_policy() -> Result<Option<Policy>> {
    let Some(path) = std::env::var_os(POLICY_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let policy = Policy::load(Path::new(&path))
        .map_err(|e| anyhow!("{e} ({POLICY_ENV} in containerd's environment names it)"))?;
    Ok(Some(policy))
}

/// Refuses, in one sentence, a container whose image the policy does not
/// accept. Called before anything of the container is made.
pub fn check_container(policy: &Policy, image: &ImageSource) -> Result<()> {
    let Some(pinned) = image.pinned_image()? else {
        bail!(
            "container {} has no image in containerd, so the policy {} cannot be checked for it",
            image.container_id,
            policy.origin()
        );
    };
    let Some(name) = pinned.name.as_deref().and_then(DockerRef::parse) else {
        bail!(
            "the image {} of container {} has no registry name, so the policy {} cannot be checked for it",
            pinned.digest,
            image.container_id,
            policy.origin()
        );
    };
    // The pinned digest, not the tag: what containerd resolved when it
    // pulled is what runs, whatever the tag names now.
    let pinned_ref = name.with_digest(&pinned.digest);
    let cache = VerdictCache::from_env();
    let key = cache_key(policy, &pinned_ref);
    if cache.as_ref().is_some_and(|c| c.fresh(&key)) {
        log::debug!("policy: {pinned_ref} accepted (cached)");
        return Ok(());
    }
    let verdict = check_remote(policy, &pinned_ref)?;
    log::info!(
        "policy: {pinned_ref} accepted by scope {}: {}",
        verdict.scope,
        verdict.accepted_by.join(", ")
    );
    if let Some(cache) = cache {
        cache.record(&key);
    }
    Ok(())
}

fn check_remote(policy: &Policy, image: &DockerRef) -> Result<wasmbox_trust::Verdict> {
    let digest = image.digest.clone().unwrap_or_default();
    let image_ref: ImageRef = image
        .to_string()
        .parse()
        .map_err(|e| anyhow!("{image} is not a reference the registry client takes: {e}"))?;
    let options = RegistryOptions {
        plain_http: is_loopback(image.host()),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the registry client")?;
    runtime.block_on(async {
        let registry = Registry::new(image.host(), &options)?;
        let repo = Repository::new(&registry, &image_ref);
        wasmbox_trust::verify::check(policy, image, &digest, &repo)
            .await
            .map_err(|e| match e {
                TrustError::Source(why) => anyhow!(
                    "the signatures of image {image} cannot be read, so the policy {} cannot accept it: {why}",
                    policy.origin()
                ),
                other => anyhow!(other),
            })
    })
}

/// Registries on loopback are asked over plain HTTP, as Docker and
/// containerd treat them; every other registry over HTTPS.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cache_key(policy: &Policy, image: &DockerRef) -> String {
    let mut h = Sha256::new();
    h.update(policy.fingerprint().as_bytes());
    h.update([0]);
    h.update(image.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// A directory of empty files, one per accepting verdict, aged by mtime.
struct VerdictCache {
    dir: PathBuf,
}

impl VerdictCache {
    fn from_env() -> Option<VerdictCache> {
        let dir = match std::env::var_os(CACHE_DIR_ENV) {
            Some(d) if d.is_empty() => return None,
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(CACHE_DIR),
        };
        Some(VerdictCache { dir })
    }

    fn fresh(&self, key: &str) -> bool {
        std::fs::metadata(self.dir.join(key))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < CACHE_TTL)
    }

    /// Best effort: a cache that cannot be written only costs a registry round trip.
    fn record(&self, key: &str) {
        use std::os::unix::fs::DirBuilderExt;
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir);
        if let Err(e) = made.and_then(|()| {
            wasmbox_format::write_atomic(&self.dir.join(key), b"", 0o600)
                .map_err(std::io::Error::other)
        }) {
            log::warn!(
                "policy: cannot record a verdict in {}: {e}",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_asked_over_plain_http() {
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
