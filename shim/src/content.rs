//! Modules that live in an image's layers rather than in its root filesystem.
//!
//! Images whose manifest carries raw Wasm layers (`application/wasm`, the
//! CNCF `application/vnd.wasm.content.layer.v1+wasm`, the Bytecode Alliance
//! component layer) unpack to an empty root filesystem (containerd ≥ 1.7.7
//! skips layers that are not tars). The module is then read from containerd's
//! content store: container → image → manifest → Wasm layer. Only containers
//! whose rootfs lacks the entrypoint pay for this, so the usual start path
//! makes no gRPC call.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use containerd_client::services::v1::{
    Container, GetContainerRequest, GetImageRequest, ListImagesRequest, ReadContentRequest,
    containers_client::ContainersClient, content_client::ContentClient,
    images_client::ImagesClient,
};
use containerd_client::tonic::{Request, transport::Channel};
use containerd_client::with_namespace;
use oci_spec::image::{ImageIndex, ImageManifest};
use wasmbox_format as format;

/// Upper bound on a manifest or index read from the content store.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Where a container's image can be read: containerd's gRPC socket and the
/// container's namespace and id.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub containerd_address: String,
    pub namespace: String,
    pub container_id: String,
}

impl ImageSource {
    /// Writes the image's Wasm layer to `dest` and returns `dest`, or `None`
    /// when the container has no image or its image has no Wasm layer.
    pub fn wasm_layer_to(&self, dest: &Path) -> Result<Option<PathBuf>> {
        let Some(bytes) = self.ask_containerd(self.fetch_wasm_layer())? else {
            return Ok(None);
        };
        std::fs::write(dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        Ok(Some(dest.to_path_buf()))
    }

    /// The image containerd pinned for the container: its name and the
    /// manifest (or index) digest it resolved to; `None` when the
    /// container has no image.
    pub fn pinned_image(&self) -> Result<Option<PinnedImage>> {
        self.ask_containerd(async {
            let channel = self.connect().await?;
            let Some(resolved) = self.resolve(&channel).await? else {
                return Ok(None);
            };
            let name = if resolved.name.starts_with("sha256:") {
                // The CRI names a container's image by its ID; the
                // repository is in another name of the same target.
                self.name_of_target(&channel, &resolved.target.digest)
                    .await?
            } else {
                Some(resolved.name)
            };
            Ok(Some(PinnedImage {
                name,
                digest: resolved.target.digest,
            }))
        })
    }

    /// Runs `work` against containerd's API on a runtime of its own; `None`
    /// when the shim was given no containerd address.
    fn ask_containerd<T>(
        &self,
        work: impl std::future::Future<Output = Result<Option<T>>>,
    ) -> Result<Option<T>> {
        if self.containerd_address.is_empty() {
            return Ok(None);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for containerd's API")?
            .block_on(work)
    }

    async fn connect(&self) -> Result<Channel> {
        containerd_client::connect(&self.containerd_address)
            .await
            .with_context(|| {
                format!(
                    "connecting to containerd at {} to read the image",
                    self.containerd_address
                )
            })
    }

    /// The container's image record: the name it goes by and its target.
    async fn resolve(&self, channel: &Channel) -> Result<Option<Resolved>> {
        let ns = self.namespace.as_str();
        let container = ContainersClient::new(channel.clone())
            .get(with_namespace!(
                GetContainerRequest {
                    id: self.container_id.clone()
                },
                ns
            ))
            .await
            .with_context(|| format!("asking containerd for container {}", self.container_id))?
            .into_inner()
            .container
            .context("containerd answered without the container")?;
        let pinned_config = cri_image_id(&container);
        // A CRI container's image is named by its ID too (CRI keeps such a
        // name for every image it pulls), so a re-tag between
        // CreateContainer and StartContainer cannot change what it runs.
        let name = match &pinned_config {
            Some(id) => id.clone(),
            None if container.image.is_empty() => return Ok(None),
            None => container.image,
        };
        let target = ImagesClient::new(channel.clone())
            .get(with_namespace!(GetImageRequest { name: name.clone() }, ns))
            .await
            .with_context(|| format!("asking containerd for image {name}"))?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .with_context(|| format!("image {name} has no target descriptor"))?;
        Ok(Some(Resolved {
            name,
            target,
            pinned_config,
        }))
    }

    /// A registry name (not an ID) of an image whose target is `digest`.
    async fn name_of_target(&self, channel: &Channel, digest: &str) -> Result<Option<String>> {
        let images = ImagesClient::new(channel.clone())
            .list(with_namespace!(
                ListImagesRequest {
                    filters: vec![format!("target.digest=={digest}")],
                },
                self.namespace.as_str()
            ))
            .await
            .with_context(|| format!("asking containerd for the names of image {digest}"))?
            .into_inner()
            .images;
        let mut names: Vec<String> = images
            .into_iter()
            .map(|i| i.name)
            .filter(|n| !n.starts_with("sha256:"))
            .collect();
        // A name with a tag reads better in messages than one with a digest.
        names.sort_by_key(|n| n.contains('@'));
        Ok(names.into_iter().next())
    }

    async fn fetch_wasm_layer(&self) -> Result<Option<Vec<u8>>> {
        let channel = self.connect().await?;
        let ns = self.namespace.as_str();
        let Some(Resolved {
            name: image_name,
            target,
            pinned_config,
        }) = self.resolve(&channel).await?
        else {
            return Ok(None);
        };
        let content = Content { channel, ns };
        let manifest = content
            .manifest_of(&target.media_type, &target.digest)
            .await
            .with_context(|| format!("reading the manifest of {image_name}"))?;
        if let Some(id) = &pinned_config
            && manifest.config().digest().to_string() != *id
        {
            bail!(
                "the image of container {} is no longer {id}, the image it was created from",
                self.container_id
            );
        }
        let Some(layer) = manifest
            .layers()
            .iter()
            .find(|l| format::is_wasm_layer(l.media_type().as_ref()))
        else {
            return Ok(None);
        };
        let digest = layer.digest().to_string();
        let limit = wasmbox_engine::max_module_bytes();
        if layer.size() > limit {
            bail!(
                "the Wasm layer {digest} of {image_name} is larger than {} MiB, the most a module may be",
                limit >> 20
            );
        }
        let bytes = content
            .read(&digest, Some(limit as usize))
            .await
            .with_context(|| format!("reading the Wasm layer {digest} of {image_name}"))?;
        Ok(Some(bytes))
    }
}

/// The image a container runs, as containerd pinned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// A registry name of the image (`host/repo:tag` or `host/repo@digest`),
    /// if containerd has one.
    pub name: Option<String>,
    /// The manifest or index digest the name resolved to when pulled.
    pub digest: String,
}

struct Resolved {
    name: String,
    target: containerd_client::types::Descriptor,
    pinned_config: Option<String>,
}

/// The extension in which containerd's CRI keeps a container's metadata,
/// JSON with the image ID (the config digest) CreateContainer resolved.
const CRI_METADATA_EXTENSION: &str = "io.cri-containerd.container.metadata";

/// The image ID a CRI container was created from, if it is one.
fn cri_image_id(container: &Container) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(rename = "Metadata")]
        metadata: Metadata,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(rename = "ImageRef")]
        image_ref: String,
    }
    let any = container.extensions.get(CRI_METADATA_EXTENSION)?;
    let versioned: Versioned = serde_json::from_slice(&any.value).ok()?;
    let id = versioned.metadata.image_ref;
    id.starts_with("sha256:").then_some(id)
}

struct Content<'a> {
    channel: Channel,
    ns: &'a str,
}

impl Content<'_> {
    /// The image manifest `digest` names, following an index to its Wasm
    /// platform entry (or its only entry).
    async fn manifest_of(&self, media_type: &str, digest: &str) -> Result<ImageManifest> {
        let bytes = self.read(digest, Some(MAX_MANIFEST_BYTES)).await?;
        let is_index = matches!(
            media_type,
            format::MEDIA_TYPE_OCI_INDEX | format::MEDIA_TYPE_DOCKER_MANIFEST_LIST
        );
        if !is_index {
            return ImageManifest::from_reader(&bytes[..])
                .with_context(|| format!("{digest} is not an image manifest"));
        }
        let index = ImageIndex::from_reader(&bytes[..])
            .with_context(|| format!("{digest} is not an image index"))?;
        let entry = format::choose_wasm_entry(index.manifests(), |m| {
            m.platform()
                .as_ref()
                .map(|p| (p.os().to_string(), p.architecture().to_string()))
        })
        .with_context(|| format!("the index {digest} has no wasm platform entry"))?;
        let bytes = self
            .read(entry.digest().as_ref(), Some(MAX_MANIFEST_BYTES))
            .await?;
        ImageManifest::from_reader(&bytes[..])
            .with_context(|| format!("{} is not an image manifest", entry.digest()))
    }

    /// A whole blob, checked against its sha256 digest.
    async fn read(&self, digest: &str, limit: Option<usize>) -> Result<Vec<u8>> {
        let expected: format::Digest = digest.parse()?;
        let mut stream = ContentClient::new(self.channel.clone())
            .read(with_namespace!(
                ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
                self.ns
            ))
            .await
            .with_context(|| format!("reading {digest} from containerd's content store"))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .with_context(|| format!("reading {digest} from containerd's content store"))?
        {
            bytes.extend_from_slice(&chunk.data);
            if limit.is_some_and(|l| bytes.len() > l) {
                bail!("{digest} is larger than {} bytes", limit.unwrap_or(0));
            }
        }
        expected
            .verify(&bytes)
            .with_context(|| format!("reading {digest} from containerd's content store"))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_extension(value: &str) -> Container {
        let mut container = Container {
            image: "example.test/app:v1".into(),
            ..Default::default()
        };
        container.extensions.insert(
            CRI_METADATA_EXTENSION.into(),
            prost_types::Any {
                type_url: "github.com/containerd/containerd/pkg/cri/store/container/Metadata"
                    .into(),
                value: value.as_bytes().to_vec(),
            },
        );
        container
    }

    #[test]
    fn a_cri_container_is_pinned_to_the_image_id_it_was_created_from() {
        let id = format!("sha256:{}", "a".repeat(64));
        let json = format!(
            r#"{{"Version":"v1","Metadata":{{"ID":"c1","Name":"app","ImageRef":"{id}","LogPath":""}}}}"#
        );
        assert_eq!(cri_image_id(&with_extension(&json)), Some(id));
        // Anything else is not a pin: the container's image name is used.
        assert_eq!(cri_image_id(&with_extension("not json")), None);
        assert_eq!(
            cri_image_id(&with_extension(r#"{"Metadata":{"ImageRef":"app:v1"}}"#)),
            None
        );
        assert_eq!(cri_image_id(&Container::default()), None);
    }
}
