//! Registries as image sources and destinations. The registry protocol
//! (auth challenges, uploads, mounts, token caching) is oci-client's; this
//! module maps it onto the image model and turns failures into one sentence
//! that says what the registry answered.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageIndex};

use crate::format;
use crate::image::{
    BlobStream, ImageDestination, ImageSource, Manifest, descriptor_digest, is_index, platform_of,
    short,
};
use crate::reference::ImageRef;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS (local or test registries only).
    pub plain_http: bool,
    /// CA certificate(s) to trust for the registry's TLS, as a PEM file.
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (unsafe; for test registries).
    pub insecure_skip_tls_verify: bool,
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

    /// Fetches the image manifest of `name`, following an index to its Wasm
    /// entry, and checks it against the digest the reference or index names.
    pub async fn fetch_manifest(&self, name: &ImageRef) -> Result<Manifest> {
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
        if let Some(expected) = name.reference().digest() {
            let expected: format::Digest = expected.parse()?;
            expected
                .verify(&bytes)
                .map_err(|e| anyhow!("{what}: the registry sent content that {e}"))?;
        }
        if !is_index(&bytes) {
            return Manifest::from_bytes(bytes.to_vec()).with_context(|| what.clone());
        }
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: the index is not valid JSON"))?;
        let Some(entry) = format::choose_wasm_entry(index.manifests(), platform_of) else {
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
        descriptor_digest(entry)?
            .verify(&bytes)
            .map_err(|e| anyhow!("{what}: the registry sent content that {e}"))?;
        Manifest::from_bytes(bytes.to_vec()).with_context(|| what.clone())
    }

    /// The manifest `reference` names, exactly as the registry holds it
    /// (no index is followed), or `None` when the registry has no such
    /// manifest. Checked against the digest when the reference has one.
    pub async fn raw_manifest(&self, reference: &Reference) -> Result<Option<bytes::Bytes>> {
        let what = format!("fetching the manifest {reference}");
        let accepted = [
            format::MEDIA_TYPE_OCI_MANIFEST,
            format::MEDIA_TYPE_OCI_INDEX,
            format::MEDIA_TYPE_DOCKER_MANIFEST,
            format::MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        ];
        match self
            .client
            .pull_manifest_raw(reference, &self.auth, &accepted)
            .await
        {
            Ok((bytes, _)) => {
                if let Some(expected) = reference.digest() {
                    let expected: format::Digest = expected.parse()?;
                    expected
                        .verify(&bytes)
                        .map_err(|e| anyhow!("{what}: the registry sent content that {e}"))?;
                }
                Ok(Some(bytes))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.explain(e, &what)),
        }
    }

    /// A whole blob of `reference`'s repository, at most `max_bytes`,
    /// checked against its digest.
    pub async fn blob_bytes(
        &self,
        reference: &Reference,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>> {
        let what = format!("pulling blob {} of {reference}", short(digest));
        let sized = self
            .client
            .pull_blob_stream(reference, digest)
            .await
            .map_err(|e| self.explain(e, &what))?;
        let mut stream = sized.stream;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| what.clone())?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max_bytes {
                bail!("{what}: it is larger than {max_bytes} bytes");
            }
        }
        let expected: format::Digest = digest.parse()?;
        expected
            .verify(&bytes)
            .map_err(|e| anyhow!("{what}: the registry sent content that {e}"))?;
        Ok(bytes)
    }

    /// Pushes `data` as a blob of `reference`'s repository, unless it is there.
    pub async fn push_blob_bytes(&self, reference: &Reference, data: &[u8]) -> Result<String> {
        let digest = format::Digest::of(data).to_string();
        let what = format!("pushing blob {} to {reference}", short(&digest));
        let present = self
            .client
            .blob_exists(reference, &digest)
            .await
            .map_err(|e| self.explain(e, &what))?;
        if !present {
            self.client
                .push_blob(reference, data.to_vec(), &digest)
                .await
                .map_err(|e| self.explain(e, &what))?;
        }
        Ok(digest)
    }

    /// Pushes a manifest (or index) to `reference` (a tag or its digest).
    pub async fn push_manifest_bytes(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let what = format!("pushing the manifest {reference}");
        self.client
            .auth(reference, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| self.explain(e, &what))?;
        self.client
            .push_manifest_raw(reference, bytes.to_vec(), media_type.parse()?)
            .await
            .map_err(|e| self.explain(e, &what))?;
        Ok(())
    }

    /// The digests of the manifests that refer to `subject` (a digest
    /// reference): oci-client asks the referrers API and, on a registry
    /// without it (404), reads the `sha256-<hex>` tag.
    pub async fn referrer_digests(&self, subject: &Reference) -> Result<Vec<String>> {
        // The registry's token for this repository is stored on the first
        // manifest request, which every caller makes before this one.
        let index = self
            .client
            .pull_referrers(subject, None)
            .await
            .map_err(|e| self.explain(e, &format!("listing the referrers of {subject}")))?;
        Ok(index.manifests.into_iter().map(|m| m.digest).collect())
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

/// Whether the registry answered that the manifest does not exist.
fn is_not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
            )
        }),
        _ => false,
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

/// One image in a registry: a source (pull, copy from) and a destination
/// (push, copy to).
pub struct RemoteImage {
    registry: Registry,
    name: ImageRef,
    /// Whether push access has been asked for (once, before the first write).
    push_auth: bool,
}

impl RemoteImage {
    pub fn new(registry: Registry, name: ImageRef) -> RemoteImage {
        RemoteImage {
            registry,
            name,
            push_auth: false,
        }
    }

    /// Asks the registry for push access to the repository, once.
    async fn authorize_push(&mut self) -> Result<()> {
        if self.push_auth {
            return Ok(());
        }
        self.registry
            .client
            .auth(
                self.name.reference(),
                &self.registry.auth,
                oci_client::RegistryOperation::Push,
            )
            .await
            .map_err(|e| self.registry.explain(e, &format!("pushing {}", self.name)))?;
        self.push_auth = true;
        Ok(())
    }
}

impl ImageSource for RemoteImage {
    fn name(&self) -> String {
        self.name.to_string()
    }

    async fn manifest(&self) -> Result<Manifest> {
        self.registry.fetch_manifest(&self.name).await
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream> {
        let digest = descriptor.digest().to_string();
        let what = format!("pulling blob {} of {}", short(&digest), self.name);
        let sized = self
            .registry
            .client
            .pull_blob_stream(self.name.reference(), digest.as_str())
            .await
            .map_err(|e| self.registry.explain(e, &what))?;
        Ok(sized.stream)
    }

    fn registry_image(&self) -> Option<&ImageRef> {
        Some(&self.name)
    }
}

impl ImageDestination for RemoteImage {
    fn name(&self) -> String {
        self.name.to_string()
    }

    async fn prepare(&mut self) -> Result<()> {
        self.authorize_push().await
    }

    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        let digest = descriptor.digest().to_string();
        let what = format!("pushing blob {} of {}", short(&digest), self.name);
        self.registry
            .client
            .blob_exists(self.name.reference(), &digest)
            .await
            .map_err(|e| self.registry.explain(e, &what))
    }

    async fn mount_blob(&mut self, descriptor: &Descriptor, from: &ImageRef) -> Result<bool> {
        let same_registry = from.registry() == self.name.registry();
        let same_repository = from.reference().repository() == self.name.reference().repository();
        if !same_registry || same_repository {
            return Ok(false);
        }
        self.authorize_push().await?;
        // A registry that cannot mount (no access to `from`, or mounting
        // switched off) answers with an upload session instead: the blob is
        // then sent, so the refusal itself is not an error.
        Ok(self
            .registry
            .client
            .mount_blob(
                self.name.reference(),
                from.reference(),
                descriptor.digest().as_ref(),
            )
            .await
            .is_ok())
    }

    async fn put_blob(&mut self, descriptor: &Descriptor, data: BlobStream) -> Result<()> {
        self.authorize_push().await?;
        let digest = descriptor.digest().to_string();
        let what = format!("pushing blob {} of {}", short(&digest), self.name);
        let data = data.map(|chunk| chunk.map_err(OciDistributionError::from));
        self.registry
            .client
            .push_blob_stream(
                self.name.reference(),
                data,
                &digest,
                Some(descriptor.size()),
            )
            .await
            .map_err(|e| self.registry.explain(e, &what))?;
        Ok(())
    }

    async fn put_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        self.authorize_push().await?;
        self.registry
            .client
            .push_manifest_raw(
                self.name.reference(),
                manifest.bytes().to_vec(),
                manifest.media_type().parse()?,
            )
            .await
            .map_err(|e| {
                self.registry
                    .explain(e, &format!("pushing the manifest of {}", self.name))
            })?;
        Ok(())
    }
}
