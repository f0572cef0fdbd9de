//! Moving images between the local store and a registry. The registry
//! protocol (auth challenges, uploads, token caching) is oci-client's; this
//! module decides what to send, verifies digests and turns failures into one
//! sentence that says what the registry answered.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndex, MediaType};
use serde::Serialize;
use std::io::Write;
use std::str::FromStr;

use crate::format;
use crate::image::parse_manifest;
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::store::Store;

/// How to reach a registry.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryOptions {
    /// Talk plain HTTP instead of HTTPS (local or test registries only).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust the CA certificate(s) in this PEM file for the registry's TLS.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (unsafe; for test registries).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

/// What happened to one blob during a push or pull.
#[derive(Debug, Clone, Serialize)]
pub struct BlobTransfer {
    pub digest: String,
    pub size: u64,
    /// `true` when the blob was already there and nothing was sent.
    pub skipped: bool,
}

/// Result of a push or pull.
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    pub reference: String,
    pub digest: String,
    pub blobs: Vec<BlobTransfer>,
}

/// A client for one registry host with the credentials stored for it.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    host: String,
    plain_http: bool,
}

impl Registry {
    /// Connects to `host` with the credentials from the Docker config.
    pub fn new(host: &str, opts: &RegistryOptions) -> Result<Self> {
        let auth = crate::auth::credentials(host)?;
        Self::with_auth(host, opts, auth)
    }

    pub fn with_auth(host: &str, opts: &RegistryOptions, auth: RegistryAuth) -> Result<Self> {
        let mut extra_root_certificates = Vec::new();
        if let Some(path) = &opts.ca_file {
            let data = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                bail!("{} is not a PEM certificate file", path.display());
            }
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: opts.insecure_skip_tls_verify,
            extra_root_certificates,
            use_monolithic_push: true,
            platform_resolver: None,
            user_agent: concat!("wasmbox/", env!("CARGO_PKG_VERSION")),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        Ok(Registry {
            client: Client::new(config),
            auth,
            host: host.to_string(),
            plain_http: opts.plain_http,
        })
    }

    /// Checks that the credentials are accepted, by asking for pull access to
    /// `repository` (a token for Bearer registries, a real request for Basic ones).
    pub async fn check_login(&self, repository: &str) -> Result<()> {
        let reference = Reference::with_tag(
            self.host.clone(),
            repository.to_string(),
            "latest".to_string(),
        );
        let what = format!("logging in to {}", self.host);
        let token = self
            .client
            .auth(&reference, &self.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| self.explain(e, &what))?;
        if token.is_some() {
            // A token server that issued a token has accepted the credentials;
            // the repository may not exist, so asking the registry proves nothing more.
            return Ok(());
        }
        // Basic-auth registries check credentials only on a real request.
        self.client
            .blob_exists(&reference, &format::Digest::of(b"").to_string())
            .await
            .map(|_| ())
            .map_err(|e| self.explain(e, &what))
    }

    /// Pushes `name` from `store`: layers and config first (skipping what the
    /// registry has), then the manifest, so a failed push never moves the tag.
    pub async fn push(
        &self,
        store: &Store,
        name: &ImageRef,
        progress: &Progress,
    ) -> Result<TransferReport> {
        let stored = store.get(name)?;
        let manifest_digest = stored.manifest.digest().to_string();
        let manifest_bytes = store.read_blob(&manifest_digest)?;
        let manifest = parse_manifest(&manifest_bytes)
            .with_context(|| format!("reading the manifest of {name} from the store"))?;
        let reference = name.reference();
        self.client
            .auth(reference, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| self.explain(e, &format!("pushing {name}")))?;

        let mut blobs = Vec::new();
        let descriptors = manifest
            .layers()
            .iter()
            .chain(std::iter::once(manifest.config()));
        for desc in descriptors {
            let digest = desc.digest().to_string();
            let what = format!("pushing blob {} of {name}", short(&digest));
            let exists = self
                .client
                .blob_exists(reference, &digest)
                .await
                .map_err(|e| self.explain(e, &what))?;
            if exists {
                blobs.push(BlobTransfer {
                    digest,
                    size: desc.size(),
                    skipped: true,
                });
                continue;
            }
            let data = bytes::Bytes::from(store.read_blob(&digest)?);
            let size = data.len() as u64;
            let bar = progress.bar(&format!("push {}", short(&digest)), size);
            const CHUNK: usize = 1 << 20;
            let chunks: Vec<bytes::Bytes> = (0..data.len())
                .step_by(CHUNK)
                .map(|start| data.slice(start..(start + CHUNK).min(data.len())))
                .collect();
            let bar_in_stream = bar.clone();
            let stream = futures_util::stream::iter(chunks).map(move |chunk| {
                bar_in_stream.inc(chunk.len() as u64);
                Ok::<_, OciDistributionError>(chunk)
            });
            let pushed = self
                .client
                .push_blob_stream(reference, stream, &digest, Some(size))
                .await;
            bar.finish_and_clear();
            pushed.map_err(|e| self.explain(e, &what))?;
            blobs.push(BlobTransfer {
                digest,
                size,
                skipped: false,
            });
        }

        let media_type = manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| format::MEDIA_TYPE_OCI_MANIFEST.to_string());
        self.client
            .push_manifest_raw(reference, manifest_bytes, media_type.parse()?)
            .await
            .map_err(|e| self.explain(e, &format!("pushing the manifest of {name}")))?;
        Ok(TransferReport {
            reference: name.to_string(),
            digest: manifest_digest,
            blobs,
        })
    }

    /// Fetches the image manifest of `name`, following an index to its Wasm
    /// entry. Returns the manifest bytes and their digest (verified).
    pub async fn fetch_manifest(&self, name: &ImageRef) -> Result<(Vec<u8>, String)> {
        let what = format!("fetching the manifest of {name}");
        let (bytes, _) = self
            .client
            .pull_manifest_raw(
                name.reference(),
                &self.auth,
                &format::ACCEPTED_MANIFEST_MEDIA_TYPES,
            )
            .await
            .map_err(|e| self.explain(e, &what))?;
        let digest = format::Digest::of(&bytes).to_string();
        if let Some(expected) = name.reference().digest()
            && expected != digest
        {
            bail!("{what}: the registry sent content that hashes to {digest}, not {expected}");
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            });
        let is_index = matches!(
            media_type.as_deref(),
            Some(format::MEDIA_TYPE_OCI_INDEX) | Some(format::MEDIA_TYPE_DOCKER_MANIFEST_LIST)
        );
        if !is_index {
            return Ok((bytes.to_vec(), digest));
        }
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: the index is not valid JSON"))?;
        let wasm = format::choose_wasm_entry(index.manifests(), platform_of);
        let Some(entry) = wasm else {
            let platforms: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|m| m.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            bail!(
                "{name} is a multi-platform index with no wasm entry (it has: {})",
                if platforms.is_empty() {
                    "no platforms".to_string()
                } else {
                    platforms.join(", ")
                }
            );
        };
        let child = name.with_digest(entry.digest().as_ref());
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&child, &self.auth, &format::ACCEPTED_MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.explain(e, &what))?;
        let digest = format::Digest::of(&bytes).to_string();
        if digest != entry.digest().to_string() {
            bail!(
                "{what}: the registry sent content that hashes to {digest}, not {}",
                entry.digest()
            );
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Downloads one blob into memory and checks its digest.
    pub async fn fetch_blob(&self, name: &ImageRef, digest: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let what = format!("fetching blob {} of {name}", short(digest));
        let mut stream = self
            .client
            .pull_blob_stream(name.reference(), digest)
            .await
            .map_err(|e| self.explain(e, &what))?
            .stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.with_context(|| what.clone())?);
        }
        let actual = format::Digest::of(&out).to_string();
        if actual != digest {
            bail!("{what}: the registry sent content that hashes to {actual}");
        }
        Ok(out)
    }

    /// Pulls `name` into `store`; blobs already there are not downloaded again.
    pub async fn pull(
        &self,
        store: &Store,
        name: &ImageRef,
        progress: &Progress,
    ) -> Result<TransferReport> {
        let (manifest_bytes, manifest_digest) = self.fetch_manifest(name).await?;
        let manifest =
            parse_manifest(&manifest_bytes).with_context(|| format!("pulling {name}"))?;
        let mut blobs = Vec::new();
        for desc in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
            let digest = desc.digest().to_string();
            if store.has_blob(&digest) {
                blobs.push(BlobTransfer {
                    digest,
                    size: desc.size(),
                    skipped: true,
                });
                continue;
            }
            let what = format!("pulling blob {} of {name}", short(&digest));
            let sized = self
                .client
                .pull_blob_stream(name.reference(), digest.as_str())
                .await
                .map_err(|e| self.explain(e, &what))?;
            let bar = progress.bar(
                &format!("pull {}", short(&digest)),
                sized.content_length.unwrap_or(desc.size()),
            );
            let mut writer = store.blob_writer()?;
            let mut stream = sized.stream;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.with_context(|| what.clone())?;
                writer.write_all(&chunk)?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            writer
                .commit(store, &digest)
                .with_context(|| what.clone())?;
            blobs.push(BlobTransfer {
                digest,
                size: desc.size(),
                skipped: false,
            });
        }
        store.write_blob(&manifest_digest, &manifest_bytes)?;
        let media_type = manifest
            .media_type()
            .clone()
            .unwrap_or(MediaType::ImageManifest);
        let descriptor: Descriptor = DescriptorBuilder::default()
            .media_type(media_type)
            .size(manifest_bytes.len() as u64)
            .digest(oci_spec::image::Digest::from_str(&manifest_digest)?)
            .build()?;
        store.tag(name, descriptor)?;
        Ok(TransferReport {
            reference: name.to_string(),
            digest: manifest_digest,
            blobs,
        })
    }

    /// One sentence saying what failed and what the registry answered.
    fn explain(&self, err: OciDistributionError, what: &str) -> anyhow::Error {
        let host = &self.host;
        let login_hint = format!("run `wasmbox login {host}` with an account that may do this");
        match err {
            OciDistributionError::UnauthorizedError { .. } => {
                anyhow!("{what}: {host} answered 401 Unauthorized; {login_hint}")
            }
            OciDistributionError::AuthenticationFailure(m) => {
                anyhow!(
                    "{what}: {host} refused the credentials ({}); {login_hint}",
                    first_line(&m)
                )
            }
            OciDistributionError::ImageManifestNotFoundError(_) => {
                anyhow!("{what}: {host} has no such image (404 MANIFEST_UNKNOWN)")
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                    )
                }) =>
            {
                anyhow!("{what}: {host} has no such image (404 MANIFEST_UNKNOWN)")
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let errors: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", spec_code(&format!("{:?}", e.code)), e.message))
                    .collect();
                let denied = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::Unauthorized
                            | oci_client::errors::OciErrorCode::Denied
                    )
                });
                let hint = if denied {
                    format!("; {login_hint}")
                } else {
                    String::new()
                };
                anyhow!("{what}: {host} answered {}{hint}", errors.join("; "))
            }
            OciDistributionError::ServerError { code, message, .. } => {
                let hint = if code == 401 || code == 403 {
                    format!("; {login_hint}")
                } else {
                    String::new()
                };
                anyhow!(
                    "{what}: {host} answered HTTP {code}: {}{hint}",
                    first_line(&message)
                )
            }
            OciDistributionError::RequestError(e) => {
                let chain = error_chain(&e);
                if let Some(status) = e.status() {
                    let hint = if matches!(status.as_u16(), 401 | 403) {
                        format!("; {login_hint}")
                    } else {
                        String::new()
                    };
                    anyhow!("{what}: {host} answered HTTP {status}{hint}")
                } else if !self.plain_http && looks_like_http_on_https(&chain) {
                    anyhow!(
                        "{what}: {host} answered plain HTTP to an HTTPS request; if you trust this registry, pass --plain-http"
                    )
                } else if chain.contains("Connection refused") {
                    anyhow!("{what}: cannot connect to {host}: connection refused")
                } else if chain.contains("certificate") || chain.contains("UnknownIssuer") {
                    anyhow!(
                        "{what}: the TLS certificate of {host} is not trusted ({}); pass --ca-file PEM with its CA",
                        last_part(&chain)
                    )
                } else {
                    anyhow!("{what}: request to {host} failed: {chain}")
                }
            }
            other => anyhow!("{what}: {}", first_line(&other.to_string())),
        }
    }
}

/// `BlobUnknown` → `BLOB_UNKNOWN`, the spelling in the distribution spec.
fn spec_code(debug_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn looks_like_http_on_https(chain: &str) -> bool {
    [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
        "invalid HTTP version",
    ]
    .iter()
    .any(|s| chain.contains(s))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default().trim()
}

fn last_part(chain: &str) -> &str {
    chain.rsplit(": ").next().unwrap_or(chain)
}

/// `sha256:0123456789ab` — enough to tell blobs apart in messages.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// An index entry's (os, architecture), for [`format::choose_wasm_entry`].
pub(crate) fn platform_of(entry: &Descriptor) -> Option<(String, String)> {
    entry
        .platform()
        .as_ref()
        .map(|p| (p.os().to_string(), p.architecture().to_string()))
}
