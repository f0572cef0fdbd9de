//! Where an image is, as `wasmbox copy` and `inspect` name it, in skopeo's
//! spelling: `REF` (a registry; `docker://REF` too), `store:REF` (the local
//! store), `oci-archive:PATH[:REF]` and `oci:DIR[:REF]`. In the last two,
//! `REF` is the image's `org.opencontainers.image.ref.name` in the layout,
//! and is also its containerd name when it is a full reference spelt out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use oci_spec::image::Descriptor;

use crate::archive::{self, ArchiveWriter};
use crate::image::{BlobStream, ImageDestination, ImageSource, Manifest};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryOptions, RemoteImage};
use crate::store::{LayoutImage, LayoutName, Store};

/// One place an image can be read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(ImageRef),
    Store(ImageRef),
    Archive { path: PathBuf, name: Option<String> },
    Layout { dir: PathBuf, name: Option<String> },
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        fn path_and_name(rest: &str) -> (PathBuf, Option<String>) {
            match rest.split_once(':') {
                Some((path, name)) if !name.is_empty() => (PathBuf::from(path), Some(name.into())),
                Some((path, _)) => (PathBuf::from(path), None),
                None => (PathBuf::from(rest), None),
            }
        }
        let location = if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, name) = path_and_name(rest);
            Location::Archive { path, name }
        } else if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, name) = path_and_name(rest);
            Location::Layout { dir, name }
        } else if let Some(rest) = s.strip_prefix("store:") {
            Location::Store(rest.parse()?)
        } else if let Some(rest) = s.strip_prefix("docker://") {
            Location::Registry(rest.parse()?)
        } else {
            Location::Registry(s.parse()?)
        };
        if let Location::Archive { path, .. } | Location::Layout { dir: path, .. } = &location
            && path.as_os_str().is_empty()
        {
            return Err(format!(
                "{s}: the path is missing (expected {}PATH[:REF])",
                &s[..s.find(':').unwrap_or(0) + 1]
            ));
        }
        Ok(location)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_name =
            |f: &mut fmt::Formatter<'_>, prefix: &str, path: &Path, name: &Option<String>| {
                write!(f, "{prefix}:{}", path.display())?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            };
        match self {
            Location::Registry(r) => write!(f, "{r}"),
            Location::Store(r) => write!(f, "store:{r}"),
            Location::Archive { path, name } => with_name(f, "oci-archive", path, name),
            Location::Layout { dir, name } => with_name(f, "oci", dir, name),
        }
    }
}

/// What opening a location needs besides the location.
pub struct Endpoints<'a> {
    /// The local store's directory (`None`: the default).
    pub store_dir: Option<&'a Path>,
    pub registry: &'a RegistryOptions,
}

impl Endpoints<'_> {
    pub fn store(&self) -> Result<Store> {
        match self.store_dir {
            Some(d) => Store::open(d),
            None => Store::open(&Store::default_root()?),
        }
    }
}

impl Location {
    /// The image reference a registry or store location names.
    pub fn image_ref(&self) -> Option<&ImageRef> {
        match self {
            Location::Registry(r) | Location::Store(r) => Some(r),
            _ => None,
        }
    }

    /// How messages and reports name the location: the store's images by
    /// their plain reference, as `wasmbox images` lists them.
    fn label(&self) -> String {
        match self {
            Location::Store(r) => r.to_string(),
            other => other.to_string(),
        }
    }

    /// The layout or archive itself, without the image's name, for messages.
    fn place(&self, endpoints: &Endpoints) -> String {
        match self {
            Location::Archive { path, .. } => format!("oci-archive:{}", path.display()),
            Location::Layout { dir, .. } => format!("oci:{}", dir.display()),
            Location::Store(_) | Location::Registry(_) => match endpoints.store_dir {
                Some(d) => format!("the local store at {}", d.display()),
                None => "the local store".to_string(),
            },
        }
    }

    /// Opens the location to read the image from.
    pub fn open_source(&self, endpoints: &Endpoints) -> Result<Source> {
        let label = self.label();
        let place = self.place(endpoints);
        Ok(match self {
            Location::Registry(r) => Source::Remote(remote(r, endpoints)?),
            Location::Store(r) => {
                let store = endpoints.store()?;
                store.get(r)?;
                Source::Layout(LayoutImage::new(
                    store,
                    LayoutName::Image(r.clone()),
                    label,
                    place,
                ))
            }
            Location::Layout { dir, name } => {
                let store = Store::open_existing(dir)?;
                Source::Layout(LayoutImage::new(
                    store,
                    layout_name(name.as_deref(), None),
                    label,
                    place,
                ))
            }
            Location::Archive { path, name } => Source::Layout(archive::open(
                path,
                layout_name(name.as_deref(), None),
                label,
                place,
            )?),
        })
    }

    /// Opens the location to write an image to. A layout or archive
    /// location that names no image takes `source_name`, the source's
    /// reference, when there is one.
    pub fn open_destination(
        &self,
        endpoints: &Endpoints,
        source_name: Option<&ImageRef>,
    ) -> Result<Destination> {
        let label = self.label();
        let place = self.place(endpoints);
        Ok(match self {
            Location::Registry(r) => Destination::Remote(remote(r, endpoints)?),
            Location::Store(r) => Destination::Layout(LayoutImage::new(
                endpoints.store()?,
                LayoutName::Image(r.clone()),
                label,
                place,
            )),
            Location::Layout { dir, name } => Destination::Layout(LayoutImage::new(
                Store::open(dir)?,
                layout_name(name.as_deref(), source_name),
                label,
                place,
            )),
            Location::Archive { path, name } => Destination::Archive(ArchiveWriter::create(
                path,
                layout_name(name.as_deref(), source_name),
                label,
            )?),
        })
    }
}

fn remote(r: &ImageRef, endpoints: &Endpoints) -> Result<RemoteImage> {
    let registry = Registry::new(r.registry(), endpoints.registry)
        .with_context(|| format!("connecting to {}", r.registry()))?;
    Ok(RemoteImage::new(registry, r.clone()))
}

fn layout_name(name: Option<&str>, fallback: Option<&ImageRef>) -> LayoutName {
    match (name, fallback) {
        (Some(n), _) => LayoutName::from_ref_name(n),
        (None, Some(r)) => LayoutName::Image(r.clone()),
        (None, None) => LayoutName::Unnamed,
    }
}

/// An opened source location.
pub enum Source {
    Remote(RemoteImage),
    Layout(LayoutImage),
}

impl ImageSource for Source {
    fn name(&self) -> String {
        match self {
            Source::Remote(s) => ImageSource::name(s),
            Source::Layout(s) => ImageSource::name(s),
        }
    }

    async fn manifest(&self) -> Result<Manifest> {
        match self {
            Source::Remote(s) => s.manifest().await,
            Source::Layout(s) => s.manifest().await,
        }
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream> {
        match self {
            Source::Remote(s) => s.blob(descriptor).await,
            Source::Layout(s) => s.blob(descriptor).await,
        }
    }

    fn registry_image(&self) -> Option<&ImageRef> {
        match self {
            Source::Remote(s) => s.registry_image(),
            Source::Layout(s) => s.registry_image(),
        }
    }
}

/// An opened destination location.
pub enum Destination {
    Remote(RemoteImage),
    Layout(LayoutImage),
    Archive(ArchiveWriter),
}

impl ImageDestination for Destination {
    fn name(&self) -> String {
        match self {
            Destination::Remote(d) => ImageDestination::name(d),
            Destination::Layout(d) => ImageDestination::name(d),
            Destination::Archive(d) => d.name(),
        }
    }

    async fn prepare(&mut self) -> Result<()> {
        match self {
            Destination::Remote(d) => d.prepare().await,
            Destination::Layout(d) => d.prepare().await,
            Destination::Archive(d) => d.prepare().await,
        }
    }

    async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool> {
        match self {
            Destination::Remote(d) => d.has_blob(descriptor).await,
            Destination::Layout(d) => d.has_blob(descriptor).await,
            Destination::Archive(d) => d.has_blob(descriptor).await,
        }
    }

    async fn mount_blob(&mut self, descriptor: &Descriptor, from: &ImageRef) -> Result<bool> {
        match self {
            Destination::Remote(d) => d.mount_blob(descriptor, from).await,
            Destination::Layout(d) => d.mount_blob(descriptor, from).await,
            Destination::Archive(d) => d.mount_blob(descriptor, from).await,
        }
    }

    async fn put_blob(&mut self, descriptor: &Descriptor, data: BlobStream) -> Result<()> {
        match self {
            Destination::Remote(d) => d.put_blob(descriptor, data).await,
            Destination::Layout(d) => d.put_blob(descriptor, data).await,
            Destination::Archive(d) => d.put_blob(descriptor, data).await,
        }
    }

    async fn put_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        match self {
            Destination::Remote(d) => d.put_manifest(manifest).await,
            Destination::Layout(d) => d.put_manifest(manifest).await,
            Destination::Archive(d) => d.put_manifest(manifest).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_in_skopeos_spelling() {
        let l: Location = "oci-archive:/tmp/a.tar:v1".parse().unwrap();
        assert_eq!(
            l,
            Location::Archive {
                path: "/tmp/a.tar".into(),
                name: Some("v1".into())
            }
        );
        let l: Location = "oci:dir:localhost:5000/x:1".parse().unwrap();
        assert_eq!(
            l,
            Location::Layout {
                dir: "dir".into(),
                name: Some("localhost:5000/x:1".into())
            }
        );
        assert_eq!(
            "store:hello".parse::<Location>().unwrap(),
            Location::Store("hello".parse().unwrap())
        );
        assert_eq!(
            "docker://localhost:5000/a/b:c"
                .parse::<Location>()
                .unwrap()
                .to_string(),
            "localhost:5000/a/b:c"
        );
        let err = "oci-archive:".parse::<Location>().unwrap_err();
        assert!(err.contains("the path is missing"), "{err}");
    }

    #[test]
    fn a_spelt_out_reference_also_names_the_image_for_containerd() {
        let manifest = oci_spec::image::DescriptorBuilder::default()
            .media_type(oci_spec::image::MediaType::ImageManifest)
            .size(2u64)
            .digest(crate::image::oci_digest(&crate::format::Digest::of(b"{}")).unwrap())
            .build()
            .unwrap();
        let annotations = |name: &str| {
            LayoutName::from_ref_name(name)
                .entry(manifest.clone())
                .annotations()
                .clone()
                .unwrap()
        };
        let full = annotations("localhost:5000/x:1");
        assert_eq!(
            full[crate::format::ANNOTATION_REF_NAME],
            "localhost:5000/x:1"
        );
        assert_eq!(
            full[crate::format::ANNOTATION_CONTAINERD_IMAGE_NAME],
            "localhost:5000/x:1"
        );
        let tag = annotations("latest");
        assert_eq!(tag[crate::format::ANNOTATION_REF_NAME], "latest");
        assert!(!tag.contains_key(crate::format::ANNOTATION_CONTAINERD_IMAGE_NAME));
    }
}
