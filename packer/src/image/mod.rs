//! The image model. Every place an image lives (the local store, a registry,
//! an OCI archive, an OCI layout directory, an image just built in memory) is
//! an [`ImageSource`], an [`ImageDestination`] or both, and [`copy`] moves an
//! image between any two of them: blobs stream through (never held whole),
//! every blob is checked against its digest on the way, and the manifest is
//! written last, byte for byte, so the copy has the source's digest and a
//! failed copy moves no name. Modelled on go-containerregistry's `v1.Image`
//! and its `remote`, `layout` and `tarball` packages.

pub mod build;
mod gzip;
pub mod inspect;

use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use indicatif::ProgressBar;
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageManifest, MediaType};
use serde::Serialize;

pub use build::{AddSpec, Blob, Compression, Image, ImageFormat, PackOptions, build};
pub use inspect::{AttachedInfo, ImageInfo, LayerInfo, describe};

use crate::format::{self, Digest, Hasher};
use crate::progress::Progress;
use crate::reference::ImageRef;

/// A blob's content as it arrives, in chunks.
pub type BlobStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// An image manifest: the exact bytes (what is digested and copied), and
/// their parsed form.
#[derive(Debug, Clone)]
pub struct Manifest {
    bytes: Vec<u8>,
    digest: Digest,
    parsed: ImageManifest,
}

impl Manifest {
    /// Parses `bytes` as an OCI or Docker schema 2 image manifest.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Manifest> {
        let parsed = parse_manifest(&bytes)?;
        Ok(Manifest {
            digest: Digest::of(&bytes),
            bytes,
            parsed,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The manifest's own media type (OCI when it names none).
    pub fn media_type(&self) -> String {
        self.parsed
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| format::MEDIA_TYPE_OCI_MANIFEST.to_string())
    }

    pub fn config(&self) -> &Descriptor {
        self.parsed.config()
    }

    pub fn layers(&self) -> &[Descriptor] {
        self.parsed.layers()
    }

    /// Every blob the manifest references: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(self.config()).chain(self.layers())
    }

    /// The descriptor an index entry uses to point at this manifest.
    pub fn descriptor(&self) -> Result<Descriptor> {
        Ok(DescriptorBuilder::default()
            .media_type(MediaType::from(self.media_type().as_str()))
            .size(self.bytes.len() as u64)
            .digest(oci_digest(&self.digest)?)
            .build()?)
    }
}

/// Parses an image manifest, accepting OCI and Docker schema 2 spellings.
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest> {
    serde_json::from_slice(bytes)
        .context("the manifest is not a valid OCI or Docker image manifest")
}

/// Whether manifest bytes are an index (OCI index or Docker manifest list)
/// rather than an image manifest.
pub fn is_index(bytes: &[u8]) -> bool {
    let media_type = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string));
    matches!(
        media_type.as_deref(),
        Some(format::MEDIA_TYPE_OCI_INDEX | format::MEDIA_TYPE_DOCKER_MANIFEST_LIST)
    )
}

/// An index entry's (os, architecture), for [`format::choose_wasm_entry`].
pub fn platform_of(entry: &Descriptor) -> Option<(String, String)> {
    entry
        .platform()
        .as_ref()
        .map(|p| (p.os().to_string(), p.architecture().to_string()))
}

/// Our digest as oci-spec's type.
pub fn oci_digest(digest: &Digest) -> Result<oci_spec::image::Digest> {
    Ok(oci_spec::image::Digest::from_str(&digest.to_string())?)
}

/// The digest a descriptor names, checked to be one wasmbox handles.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest> {
    Ok(descriptor.digest().to_string().parse()?)
}

/// Where an image can be read from.
#[allow(async_fn_in_trait)] // used with concrete types on the CLI's one thread
pub trait ImageSource {
    /// Says where the image is, for messages and reports.
    fn name(&self) -> String;

    /// The image manifest. A source that holds an index resolves it to its
    /// Wasm entry by the format crate's one rule.
    async fn manifest(&self) -> Result<Manifest>;

    /// The content of one blob of the manifest, as it comes: [`copy`] and
    /// [`read_blob`] verify it.
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream>;

    /// The registry image this source reads, so that a destination on the
    /// same registry can mount blobs instead of uploading them.
    fn registry_image(&self) -> Option<&ImageRef> {
        None
    }
}

/// Where an image can be written.
#[allow(async_fn_in_trait)] // used with concrete types on the CLI's one thread
pub trait ImageDestination {
    /// Says where the image goes, for messages and reports.
    fn name(&self) -> String;

    /// Readies the destination before any blob is asked about: a registry
    /// asks for push access here, so a refusal comes before any transfer.
    async fn prepare(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether the blob is already there (and so need not be sent).
    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool>;

    /// Makes the blob appear by mounting it from `from`, another repository
    /// of the same registry. `Ok(false)` when it cannot: the blob is then sent.
    async fn mount_blob(&mut self, _descriptor: &Descriptor, _from: &ImageRef) -> Result<bool> {
        Ok(false)
    }

    /// Stores one blob. `data` fails at its end if the content does not match
    /// the descriptor, and the destination must then keep nothing of it.
    async fn put_blob(&mut self, descriptor: &Descriptor, data: BlobStream) -> Result<()>;

    /// Stores the manifest and points the destination's name at it. Called
    /// once, after every blob is in place.
    async fn put_manifest(&mut self, manifest: &Manifest) -> Result<()>;
}

/// What happened to one blob during a copy.
#[derive(Debug, Clone, Serialize)]
pub struct BlobTransfer {
    pub digest: String,
    pub size: u64,
    /// `true` when the destination had the blob and nothing was sent.
    pub skipped: bool,
    /// `true` when the registry mounted the blob from the source repository.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mounted: bool,
}

/// The result of a copy (and so of a push, a pull and a pack).
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    /// The destination.
    pub reference: String,
    /// The manifest digest, the same at both ends.
    pub digest: String,
    pub blobs: Vec<BlobTransfer>,
}

/// Copies the image from `source` to `destination`: blobs the destination
/// lacks (mounted when both are repositories of one registry, else streamed
/// and verified), then the manifest.
pub async fn copy(
    source: &impl ImageSource,
    destination: &mut impl ImageDestination,
    progress: &Progress,
) -> Result<TransferReport> {
    let manifest = source.manifest().await?;
    destination.prepare().await?;
    let mut blobs = Vec::new();
    for descriptor in manifest.blobs() {
        let digest = descriptor_digest(descriptor)?;
        let mut transfer = BlobTransfer {
            digest: digest.to_string(),
            size: descriptor.size(),
            skipped: false,
            mounted: false,
        };
        if destination.has_blob(descriptor).await? {
            transfer.skipped = true;
        } else if let Some(from) = source.registry_image()
            && destination.mount_blob(descriptor, from).await?
        {
            transfer.mounted = true;
        } else {
            let bar = progress.bar(
                &format!("copy {}", short(&transfer.digest)),
                descriptor.size(),
            );
            let data = verified(
                source.blob(descriptor).await?,
                digest,
                descriptor.size(),
                bar.clone(),
            );
            let stored = destination.put_blob(descriptor, data).await;
            bar.finish_and_clear();
            stored?;
        }
        blobs.push(transfer);
    }
    destination.put_manifest(&manifest).await?;
    Ok(TransferReport {
        reference: destination.name(),
        digest: manifest.digest().to_string(),
        blobs,
    })
}

/// Reads a whole blob into memory and verifies it: for configs and other
/// small blobs only.
pub async fn read_blob(source: &impl ImageSource, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let digest = descriptor_digest(descriptor)?;
    let mut stream = verified(
        source.blob(descriptor).await?,
        digest.clone(),
        descriptor.size(),
        ProgressBar::hidden(),
    );
    let mut out = Vec::with_capacity(descriptor.size().min(1 << 20) as usize);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(
            &chunk.with_context(|| format!("reading blob {digest} from {}", source.name()))?,
        );
    }
    Ok(out)
}

/// `sha256:0123456789ab`: enough to tell blobs apart in messages.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// Wraps a blob stream so that it counts progress, and ends in an error
/// instead of its last `None` when the content is longer or shorter than
/// `size` or does not hash to `digest`.
pub fn verified(inner: BlobStream, digest: Digest, size: u64, bar: ProgressBar) -> BlobStream {
    Box::pin(Verified {
        inner,
        hasher: Some(Hasher::default()),
        digest,
        size,
        seen: 0,
        bar,
    })
}

struct Verified {
    inner: BlobStream,
    /// `None` once the stream has ended, well or badly.
    hasher: Option<Hasher>,
    digest: Digest,
    size: u64,
    seen: u64,
    bar: ProgressBar,
}

impl Verified {
    fn fail(&mut self, why: String) -> Poll<Option<std::io::Result<Bytes>>> {
        self.hasher = None;
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the content of {} {why}", self.digest),
        ))))
    }
}

impl Stream for Verified {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.hasher.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.size {
                    let size = self.size;
                    return self.fail(format!(
                        "is longer than the {size} bytes its descriptor says"
                    ));
                }
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&chunk);
                }
                self.bar.inc(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.hasher = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let hasher = self.hasher.take().unwrap_or_default();
                if self.seen != self.size {
                    let (seen, size) = (self.seen, self.size);
                    return self.fail(format!("ended after {seen} of its {size} bytes"));
                }
                let actual = hasher.finish();
                if actual != self.digest {
                    return self.fail(format!("hashes to {actual}"));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// A stream over a blocking reader (a file), in chunks of 1 MiB.
pub fn stream_reader(reader: impl std::io::Read + Send + 'static) -> BlobStream {
    const CHUNK: usize = 1 << 20;
    Box::pin(futures_util::stream::unfold(
        Some(reader),
        |reader| async move {
            let mut reader = reader?;
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Some((Err(e), None)),
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            Some((Ok(Bytes::from(buf)), Some(reader)))
        },
    ))
}

/// A blocking reader over a blob stream, for readers that are not async
/// (tar, decompressors): each read that needs a chunk runs the stream on
/// `runtime`, so it must be called outside of it.
pub fn blocking_reader(
    runtime: &tokio::runtime::Runtime,
    stream: BlobStream,
) -> impl std::io::Read + '_ {
    BlockingReader {
        runtime,
        stream,
        chunk: Bytes::new(),
    }
}

struct BlockingReader<'a> {
    runtime: &'a tokio::runtime::Runtime,
    stream: BlobStream,
    chunk: Bytes,
}

impl std::io::Read for BlockingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(chunk) => self.chunk = chunk?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// A stream of bytes already in memory.
pub fn stream_bytes(data: Bytes) -> BlobStream {
    const CHUNK: usize = 1 << 20;
    let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
        .step_by(CHUNK)
        .map(|start| Ok(data.slice(start..(start + CHUNK).min(data.len()))))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

impl ImageSource for Image {
    fn name(&self) -> String {
        "the packed image".to_string()
    }

    async fn manifest(&self) -> Result<Manifest> {
        Manifest::from_bytes(self.manifest.data.clone())
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream> {
        let blob = self
            .blobs
            .iter()
            .find(|b| b.descriptor.digest() == descriptor.digest())
            .with_context(|| format!("the packed image has no blob {}", descriptor.digest()))?;
        Ok(stream_bytes(Bytes::from(blob.data.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut s: BlobStream) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn check(data: &'static [u8], digest_of: &[u8], size: u64) -> std::io::Result<Vec<u8>> {
        let stream = verified(
            stream_bytes(Bytes::from_static(data)),
            Digest::of(digest_of),
            size,
            ProgressBar::hidden(),
        );
        block_on(drain(stream))
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_verified_stream_passes_matching_content_and_fails_at_the_end_otherwise() {
        assert_eq!(check(b"hello", b"hello", 5).unwrap(), b"hello");
        let wrong = check(b"hellO", b"hello", 5).unwrap_err();
        assert!(wrong.to_string().contains("hashes to sha256:"), "{wrong}");
        let short = check(b"hell", b"hello", 5).unwrap_err();
        assert!(
            short.to_string().contains("ended after 4 of its 5 bytes"),
            "{short}"
        );
        let long = check(b"hello!", b"hello", 5).unwrap_err();
        assert!(
            long.to_string().contains("longer than the 5 bytes"),
            "{long}"
        );
    }

    #[test]
    fn a_file_streams_in_chunks_with_every_byte() {
        let data: Vec<u8> = (0..(3 << 20) + 7).map(|i| i as u8).collect();
        let out = block_on(drain(stream_reader(std::io::Cursor::new(data.clone())))).unwrap();
        assert_eq!(out, data);
    }
}
