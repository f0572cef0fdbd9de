//! The shim's own settings in containerd's runtime table. For a runtime
//! other than runc, containerd's CRI sends `start` the runtime's `options`
//! as `runtimeoptions.v1.Options` (`ConfigPath`, or `ConfigBody`: TOML),
//! the way gVisor's shim reads `runsc.toml`:
//!
//! ```toml
//! [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmtime-verified]
//!   runtime_type = 'io.containerd.wasmtime.v1'
//!   [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmtime-verified.options]
//!     ConfigPath = '/etc/wasmbox/shim.toml'   # policy = "…", shim_group = "…"
//! ```
//!
//! A setting here is the runtime handler's, so it wins over the node-wide
//! environment (`WASMBOX_POLICY` in containerd's environment): `start`
//! hands it to the shim process it spawns.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use containerd_shim::protos::protobuf::CodedInputStream;
use containerd_shim::protos::protobuf::well_known_types::any::Any;

/// The type containerd's CRI gives the options of a non-runc runtime.
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// What the runtime's options set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShimConfig {
    /// The run-time policy (`policy = "…"`), instead of `WASMBOX_POLICY`.
    pub policy: Option<PathBuf>,
    /// The shared-shim group of the runtime's containers (`shim_group =
    /// "…"`, `shared.rs`), unless a container's annotation names another.
    pub shim_group: Option<String>,
}

impl ShimConfig {
    /// The settings in `options`, if they are the CRI's runtime options
    /// (other option types, e.g. runc's, set nothing here).
    pub fn from_options(options: &Any) -> Result<ShimConfig> {
        if !options.type_url.ends_with(RUNTIME_OPTIONS_TYPE) {
            return Ok(ShimConfig::default());
        }
        let (config_path, config_body) = decode(&options.value)
            .context("the runtime options containerd sent are not runtimeoptions.v1.Options")?;
        if !config_path.is_empty() {
            let text = std::fs::read_to_string(&config_path)
                .with_context(|| format!("cannot read the runtime's ConfigPath {config_path}"))?;
            return ShimConfig::parse(&text, &config_path);
        }
        ShimConfig::parse(&config_body, "the runtime's ConfigBody")
    }

    fn parse(text: &str, origin: &str) -> Result<ShimConfig> {
        let doc: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| anyhow!("{origin} is not TOML: {}", e.message()))?;
        let mut config = ShimConfig::default();
        for (key, item) in doc.iter() {
            match key {
                "policy" => {
                    let path = item
                        .as_str()
                        .with_context(|| format!("{origin}: policy must be a path (a string)"))?;
                    config.policy = Some(PathBuf::from(path));
                }
                "shim_group" => {
                    let group = item.as_str().with_context(|| {
                        format!("{origin}: shim_group must be a group name (a string)")
                    })?;
                    config.shim_group = Some(group.to_string());
                }
                other => {
                    bail!(
                        "{origin} has an unknown setting \"{other}\" (the shim reads: policy, shim_group)"
                    )
                }
            }
        }
        Ok(config)
    }
}

/// `(config_path, config_body)` of a `runtimeoptions.v1.Options` message
/// (fields 2 and 3; 1 is the type URL of the file, unused here).
fn decode(bytes: &[u8]) -> Result<(String, String)> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        match (tag >> 3, tag & 7) {
            (2, 2) => path = input.read_string()?,
            (3, 2) => body = input.read_string()?,
            (_, 0) => {
                input.read_raw_varint64()?;
            }
            (_, 1) => {
                input.read_fixed64()?;
            }
            (_, 2) => {
                input.read_bytes()?;
            }
            (_, 5) => {
                input.read_fixed32()?;
            }
            (field, wire) => bail!("field {field} has wire type {wire}"),
        }
    }
    Ok((path, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::CodedOutputStream;

    fn options(path: &str, body: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "io.containerd.wasmtime.v1.options")
                .unwrap();
            if !path.is_empty() {
                out.write_string(2, path).unwrap();
            }
            if !body.is_empty() {
                out.write_string(3, body).unwrap();
            }
            out.flush().unwrap();
        }
        Any {
            type_url: format!("types.containerd.io/{RUNTIME_OPTIONS_TYPE}"),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn the_policy_comes_from_config_path_or_config_body() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shim.toml");
        std::fs::write(&file, "policy = \"/etc/wasmbox/policy.json\"\n").unwrap();
        let want = ShimConfig {
            policy: Some("/etc/wasmbox/policy.json".into()),
            ..Default::default()
        };
        assert_eq!(
            ShimConfig::from_options(&options(file.to_str().unwrap(), "")).unwrap(),
            want
        );
        assert_eq!(
            ShimConfig::from_options(&options("", "policy = '/etc/wasmbox/policy.json'")).unwrap(),
            want
        );
        assert_eq!(
            ShimConfig::from_options(&options("", "")).unwrap(),
            ShimConfig::default()
        );
        assert_eq!(
            ShimConfig::from_options(&options("", "shim_group = 'web'"))
                .unwrap()
                .shim_group
                .as_deref(),
            Some("web")
        );
        // runc's options set nothing here.
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![8, 1],
            ..Default::default()
        };
        assert_eq!(
            ShimConfig::from_options(&runc).unwrap(),
            ShimConfig::default()
        );
    }

    #[test]
    fn bad_settings_are_refused_in_one_sentence() {
        let err = format!(
            "{:#}",
            ShimConfig::from_options(&options("", "polcy = 'x'")).unwrap_err()
        );
        assert_eq!(
            err,
            "the runtime's ConfigBody has an unknown setting \"polcy\" (the shim reads: policy, shim_group)"
        );
        let err = format!(
            "{:#}",
            ShimConfig::from_options(&options("/nonexistent/shim.toml", "")).unwrap_err()
        );
        assert!(
            err.starts_with("cannot read the runtime's ConfigPath /nonexistent/shim.toml"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            ShimConfig::from_options(&options("", "policy = 3")).unwrap_err()
        );
        assert!(err.contains("policy must be a path"), "{err}");
    }
}
