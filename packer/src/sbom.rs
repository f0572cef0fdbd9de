//! SBOMs of Wasm images: an SPDX 2.3 JSON document, attached to the image
//! as an OCI referrer (`application/spdx+json`), describing the module by
//! its SHA-256, the tools and languages its `producers` section names, and
//! for a component its WASI world and the WIT interfaces it imports and
//! exports. `oras discover`, `wasmbox inspect` and SBOM scanners that read
//! referrers find it.

use std::time::SystemTime;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use wasmparser::{Parser, Payload};

use crate::format::MEDIA_TYPE_SPDX;
use crate::module::WasmModule;

/// One entry of a `producers` custom section (tool-conventions' `ProducersSection.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// `language`, `processed-by` or `sdk`.
    pub field: String,
    pub name: String,
    pub version: String,
}

/// Every `producers` entry in the binary, nested core modules of a
/// component included, each once.
pub fn producers(bytes: &[u8]) -> Result<Vec<Producer>> {
    let mut found: Vec<Producer> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Payload::CustomSection(section) = payload? else {
            continue;
        };
        let wasmparser::KnownCustom::Producers(reader) = section.as_known() else {
            continue;
        };
        for field in reader {
            let field = field?;
            for value in field.values {
                let value = value?;
                let p = Producer {
                    field: field.name.to_string(),
                    name: value.name.to_string(),
                    version: value.version.to_string(),
                };
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
    }
    Ok(found)
}

/// The SPDX document for `module` (named `file_name` in the image `image`).
/// A module without a `producers` section is refused: its SBOM would say
/// nothing of how it was built.
pub fn spdx(
    module: &WasmModule,
    file_name: &str,
    image: &str,
    created: SystemTime,
) -> Result<Vec<u8>> {
    let producers = producers(&module.bytes)?;
    if producers.is_empty() {
        bail!(
            "{file_name} has no producers section (the custom section compilers write to name the language and tools that built it), so its SBOM would say nothing of how it was built; build it with a toolchain that writes one (clang, rustc, componentize-py, or add one with `wasm-tools metadata add`) or leave out --sbom"
        );
    }
    let digest = wasmbox_format::Digest::of(&module.bytes);
    let created = humantime::format_rfc3339_seconds(created).to_string();
    let tool = concat!("Tool: wasmbox-", env!("CARGO_PKG_VERSION"));
    let languages: Vec<String> = producers
        .iter()
        .filter(|p| p.field == "language")
        .map(|p| format!("{} {}", p.name, p.version).trim().to_string())
        .collect();
    let annotate = |comment: String| {
        json!({
            "annotationDate": created,
            "annotationType": "OTHER",
            "annotator": tool,
            "comment": comment,
        })
    };
    let mut annotations: Vec<Value> = vec![annotate(format!("wasi world: {}", module.world))];
    annotations.extend(languages.iter().map(|l| annotate(format!("language: {l}"))));
    if module.kind == crate::module::ModuleKind::Component {
        annotations.extend(
            module
                .imports
                .iter()
                .map(|i| annotate(format!("imports: {i}"))),
        );
        annotations.extend(
            module
                .exports
                .iter()
                .map(|e| annotate(format!("exports: {e}"))),
        );
    } else {
        annotations.extend(
            module
                .imports
                .iter()
                .map(|i| annotate(format!("imports module: {i}"))),
        );
    }
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Module",
        "name": file_name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest.hex()}],
        "comment": format!(
            "WebAssembly {} for WASI world {}{}",
            if module.kind == crate::module::ModuleKind::Component { "component" } else { "core module" },
            module.world,
            if languages.is_empty() { String::new() } else { format!(", written in {}", languages.join(", ")) }
        ),
        "annotations": annotations,
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Module",
    })];
    for (i, p) in producers
        .iter()
        .filter(|p| p.field != "language")
        .enumerate()
    {
        let id = format!("SPDXRef-Producer-{i}");
        let mut package = json!({
            "SPDXID": id,
            "name": p.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": if p.field == "sdk" { "LIBRARY" } else { "APPLICATION" },
            "comment": format!("producers section: {}", p.field),
        });
        if !p.version.is_empty() {
            package["versionInfo"] = Value::String(p.version.clone());
        }
        packages.push(package);
        relationships.push(json!({
            "spdxElementId": id,
            "relationshipType": if p.field == "sdk" { "DEPENDENCY_OF" } else { "BUILD_TOOL_OF" },
            "relatedSpdxElement": "SPDXRef-Module",
        }));
    }
    let document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image,
        "documentNamespace": format!("https://spdx.wasmbox.dev/{}/{}", image.replace(['/', ':', '@'], "-"), digest.hex()),
        "creationInfo": {"created": created, "creators": [tool]},
        "packages": packages,
        "relationships": relationships,
    });
    Ok(serde_json::to_vec_pretty(&document)?)
}

/// Attaches `document` to the image `name` in its registry; returns the
/// SBOM artifact's digest.
pub async fn attach(
    registry: &crate::registry::Registry,
    name: &crate::reference::ImageRef,
    document: &[u8],
) -> Result<String> {
    let repo = crate::referrers::Repository::new(registry, name);
    let subject = repo.resolve().await?;
    let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    crate::referrers::attach(
        &repo,
        &subject,
        MEDIA_TYPE_SPDX,
        MEDIA_TYPE_SPDX,
        Some("sbom.spdx.json"),
        document,
        &[("org.opencontainers.image.created", created.as_str())],
    )
    .await
    .map_err(|e| e.context(format!("attaching the SBOM to {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_module_without_producers_gets_no_sbom() {
        let bytes = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        let m = WasmModule::from_bytes(Path::new("x.wasm"), bytes, None).unwrap();
        let err = spdx(&m, "x.wasm", "r/x:1", SystemTime::UNIX_EPOCH)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.wasm has no producers section"), "{err}");
    }

    #[test]
    fn the_document_names_the_modules_digest_tools_and_languages() {
        // A producers section as clang writes it.
        let bytes = wat::parse_str(
            r#"(module (func (export "_start"))
                 (@producers (language "C11" "") (processed-by "clang" "14.0.6")))"#,
        )
        .unwrap();
        let m = WasmModule::from_bytes(Path::new("x.wasm"), bytes.clone(), None).unwrap();
        let doc: Value =
            serde_json::from_slice(&spdx(&m, "x.wasm", "r/x:1", SystemTime::UNIX_EPOCH).unwrap())
                .unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(
            doc["packages"][0]["checksums"][0]["checksumValue"],
            wasmbox_format::Digest::of(&bytes).hex()
        );
        assert_eq!(doc["packages"][1]["name"], "clang");
        assert_eq!(doc["packages"][1]["versionInfo"], "14.0.6");
        assert!(
            doc["packages"][0]["comment"]
                .as_str()
                .unwrap()
                .contains("written in C11")
        );
    }
}
