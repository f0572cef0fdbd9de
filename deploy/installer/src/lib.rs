//! Node installer for wasmbox: puts `containerd-shim-wasmtime-v1` on a
//! node and registers the `wasmtime` runtime handler in containerd's config,
//! so that pods with `runtimeClassName: wasmtime` run on the shim.
//!
//! The library holds everything that can be tested without a node: the
//! config edit (format-preserving, so an operator's comments and settings
//! survive), the atomic file writes and the node-label request.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, TableLike};

/// Runtime handler name that the `RuntimeClass` refers to.
pub const DEFAULT_HANDLER: &str = "wasmtime";
/// containerd runtime type; containerd derives the shim binary name
/// `containerd-shim-wasmtime-v1` from it.
pub const DEFAULT_RUNTIME_TYPE: &str = wasmbox_format::RUNTIME_TYPE;
/// Node label the installer sets once the node can run Wasm pods; the
/// `RuntimeClass` schedules onto nodes carrying it.
pub const NODE_LABEL: &str = "wasmbox.dev/wasmtime";
/// Value of [`NODE_LABEL`].
pub const NODE_LABEL_VALUE: &str = "true";
/// Suffix of the one-time backup of the original containerd config.
pub const BACKUP_SUFFIX: &str = ".wasmbox-backup";

/// Why a containerd config could not be edited. The file is never written
/// when this is returned.
#[derive(Debug, thiserror::Error)]
#[error("containerd config {} {kind}; it was left unchanged", path.display())]
pub struct ConfigError {
    /// The config file the text came from (for the message only).
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: ConfigErrorKind,
}

/// The different reasons in [`ConfigError`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The text is not TOML at all.
    #[error("is not valid TOML (line {line}, column {column}: {message})")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// `version` is there but is not an integer.
    #[error("has a `version` that is not an integer")]
    VersionNotInteger,
    /// `version` is an integer containerd schema we do not know.
    #[error("has version = {0}, which this installer does not support (1 to 4 are)")]
    UnsupportedVersion(i64),
    /// A key on the path to the runtime table holds something else.
    #[error("has `{0}` that is not a table")]
    NotATable(String),
    /// A key on the path is an inline table, which cannot get a `[section]`
    /// child; editing it would mean rewriting the operator's formatting.
    #[error("has `{0}` as an inline table; add the runtime to it by hand")]
    InlineTable(String),
}

/// What to add: the handler name and runtime type are options so a cluster
/// can run a second handler (e.g. for a pinned shim build).
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Runtime handler name (the `RuntimeClass`'s `handler`).
    pub handler: String,
    /// containerd `runtime_type` for it.
    pub runtime_type: String,
    /// containerd major version, only used to pick the schema of a config
    /// written from scratch (containerd 2 gets `version = 3`).
    pub containerd_major: u32,
    /// Where the config text came from; named in error messages.
    pub path: PathBuf,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            handler: DEFAULT_HANDLER.to_owned(),
            runtime_type: DEFAULT_RUNTIME_TYPE.to_owned(),
            containerd_major: 1,
            path: PathBuf::from("/etc/containerd/config.toml"),
        }
    }
}

/// Result of [`add_runtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The new config text (byte-identical to the input when `!changed`).
    pub text: String,
    /// Whether anything had to change (and so containerd must restart).
    pub changed: bool,
}

/// containerd's built-in default runtime handler and its type.
const RUNC: &str = "runc";
const RUNC_TYPE: &str = "io.containerd.runc.v2";

/// Path of the CRI plugin's `runtimes` table for a containerd config schema
/// version; the CRI plugin was renamed between schemas.
pub fn runtimes_path(config_version: i64) -> &'static [&'static str] {
    match config_version {
        3 | 4 => &[
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
        ],
        2 => &[
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
        ],
        _ => &["plugins", "cri", "containerd", "runtimes"],
    }
}

/// The `version` key of a containerd config, as containerd reads it:
/// absent means the version-1 schema. Errors when it is not an integer or
/// not a schema we know, because guessing would put the runtime in a
/// table containerd ignores.
pub fn config_version(doc: &DocumentMut) -> Result<i64, ConfigErrorKind> {
    match doc.get("version") {
        None => Ok(1),
        Some(item) => match item.as_integer() {
            // 4: containerd 2.4's, whose CRI plugins are those of 3.
            Some(v @ 1..=4) => Ok(v),
            Some(v) => Err(ConfigErrorKind::UnsupportedVersion(v)),
            None => Err(ConfigErrorKind::VersionNotInteger),
        },
    }
}

/// Schema version of a config text (for `--containerd-major auto`'s
/// fallback); `None` when the text is empty or not a valid config.
pub fn config_text_version(config: &str) -> Option<i64> {
    if config.trim().is_empty() {
        return None;
    }
    config_version(&config.parse().ok()?).ok()
}

/// Adds the runtime handler to a containerd config text, touching nothing
/// else: the new table is appended as an explicit `[...]` section so the
/// operator's comments, other plugins and runtimes stay byte-for-byte, and
/// a config that already has it comes back unchanged (so the installer
/// knows not to restart containerd).
pub fn add_runtime(config: &str, opts: &RuntimeOptions) -> Result<Edit, ConfigError> {
    let err = |kind| ConfigError {
        path: opts.path.clone(),
        kind,
    };
    // containerd runs with built-in defaults when there is no config; a
    // fresh config in the schema of that containerd keeps them.
    let fresh = || -> Result<String, ConfigError> {
        let version = if opts.containerd_major >= 2 { 3 } else { 2 };
        let mut doc = DocumentMut::new();
        doc["version"] = toml_edit::value(version);
        insert_runtime(&mut doc, version, opts).map_err(err)?;
        if version >= 3 {
            use_local_image_pull(&mut doc).map_err(err)?;
        }
        Ok(doc.to_string())
    };
    if config.trim().is_empty() {
        return Ok(Edit {
            text: fresh()?,
            changed: true,
        });
    }
    let mut doc: DocumentMut = config.parse().map_err(|e: toml_edit::TomlError| {
        let (line, column) = e
            .span()
            .map(|s| line_column(config, s.start))
            .unwrap_or((1, 1));
        err(ConfigErrorKind::Syntax {
            line,
            column,
            message: e.message().trim().trim_end_matches('.').replace('\n', " "),
        })
    })?;
    if doc.as_table().is_empty() {
        // Only comments: keep them, followed by a fresh config.
        let mut text = config.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&fresh()?);
        return Ok(Edit {
            text,
            changed: true,
        });
    }
    let version = config_version(&doc).map_err(err)?;
    let mut changed = insert_runtime(&mut doc, version, opts).map_err(err)?;
    if version >= 3 {
        changed |= use_local_image_pull(&mut doc).map_err(err)?;
    }
    Ok(if changed {
        Edit {
            text: doc.to_string(),
            changed: true,
        }
    } else {
        Edit {
            text: config.to_owned(),
            changed: false,
        }
    })
}

/// 1-based line and column of a byte offset, for error messages.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Puts `runtime_type` into `<runtimes>.<handler>`; returns whether
/// anything changed.
fn insert_runtime(
    doc: &mut DocumentMut,
    version: i64,
    opts: &RuntimeOptions,
) -> Result<bool, ConfigErrorKind> {
    // Appending at the end: one past the last position of any table.
    let end_position = max_position(doc.as_table()).map_or(1, |p| p + 1);
    let trailing = doc
        .trailing()
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    let ends_with_newline = doc.to_string().ends_with('\n');
    let path = runtimes_path(version);
    // The runtime the CRI plugin uses when a pod names no handler.
    let default_runtime = path[..path.len() - 1]
        .iter()
        .try_fold(doc.as_item(), |item, key| item.get(key))
        .and_then(|containerd| containerd.get("default_runtime_name"))
        .and_then(Item::as_str)
        .unwrap_or(RUNC)
        .to_string();

    let mut shown = String::new();
    let mut table: &mut Table = doc.as_table_mut();
    for key in path {
        if !shown.is_empty() {
            shown.push('.');
        }
        shown.push_str(&toml_edit::Key::new(*key).display_repr());
        let item = table.entry(key).or_insert_with(|| {
            // Parents stay implicit so only the runtime's own header is
            // printed.
            let mut parent = Table::new();
            parent.set_implicit(true);
            Item::Table(parent)
        });
        table = match item {
            Item::Table(t) => t,
            Item::Value(toml_edit::Value::InlineTable(_)) => {
                return Err(ConfigErrorKind::InlineTable(shown));
            }
            _ => return Err(ConfigErrorKind::NotATable(shown)),
        };
    }
    shown.push('.');
    shown.push_str(&toml_edit::Key::new(opts.handler.as_str()).display_repr());

    if let Some(existing) = table.get_mut(&opts.handler) {
        let runtime: &mut dyn TableLike = match existing {
            Item::Table(t) => t,
            Item::Value(toml_edit::Value::InlineTable(t)) => t,
            _ => return Err(ConfigErrorKind::NotATable(shown)),
        };
        return Ok(set_runtime_type(runtime, &opts.runtime_type));
    }

    // Comments and blank lines after the last table belong to the document's
    // trailing text; move them in front of the first new header so the
    // original text is a byte-exact prefix of the result.
    let mut prefix = trailing;
    if !ends_with_newline {
        prefix.push('\n');
    }
    prefix.push('\n');
    let mut position = end_position;
    let mut new_runtime = |name: &str, runtime_type: &str, table: &mut Table| {
        let mut runtime = Table::new();
        runtime.insert("runtime_type", toml_edit::value(runtime_type));
        runtime.set_position(Some(position));
        position += 1;
        runtime
            .decor_mut()
            .set_prefix(std::mem::replace(&mut prefix, "\n".to_string()));
        table.insert(name, Item::Table(runtime));
    };
    // containerd forgets its built-in runc runtime as soon as the config
    // names any runtime, and its CRI plugin then refuses to load ("no
    // corresponding runtime configured ... for default_runtime_name"), so
    // runc is written out when the config relied on the built-in one.
    if default_runtime == RUNC && opts.handler != RUNC && !table.contains_key(RUNC) {
        new_runtime(RUNC, RUNC_TYPE, table);
    }
    new_runtime(&opts.handler, &opts.runtime_type, table);
    doc.set_trailing("");
    Ok(true)
}

/// The CRI images plugin of a version-3 config (containerd 2.x).
const CRI_IMAGES: [&str; 2] = ["plugins", "io.containerd.cri.v1.images"];

/// Sets `use_local_image_pull = true` in the CRI images plugin of a
/// version-3 config; returns whether anything changed. containerd >= 2.3
/// pulls CRI images through its Transfer Service, which unpacks only images
/// of the host's OS, so a `wasi/wasm` image would be fetched and never
/// unpacked; the CRI's own pull unpacks it on every 2.x. An existing key
/// is set in place (keeping its formatting); a missing table is appended.
fn use_local_image_pull(doc: &mut DocumentMut) -> Result<bool, ConfigErrorKind> {
    const KEY: &str = "use_local_image_pull";
    let end_position = max_position(doc.as_table()).map_or(1, |p| p + 1);
    let plugins = doc.as_table_mut().entry(CRI_IMAGES[0]).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let Some(plugins) = plugins.as_table_like_mut() else {
        return Err(ConfigErrorKind::NotATable(CRI_IMAGES[0].to_string()));
    };
    let shown = format!(
        "plugins.{}",
        toml_edit::Key::new(CRI_IMAGES[1]).display_repr()
    );
    match plugins.get_mut(CRI_IMAGES[1]) {
        None => {
            let mut images = Table::new();
            images.insert(KEY, toml_edit::value(true));
            images.set_position(Some(end_position));
            images.decor_mut().set_prefix("\n");
            plugins.insert(CRI_IMAGES[1], Item::Table(images));
            Ok(true)
        }
        Some(item) => {
            let images = item
                .as_table_like_mut()
                .ok_or_else(|| ConfigErrorKind::NotATable(shown.clone()))?;
            match images.get_mut(KEY) {
                Some(Item::Value(v)) if v.as_bool() == Some(true) => Ok(false),
                Some(Item::Value(v)) => {
                    let decor = v.decor().clone();
                    *v = true.into();
                    *v.decor_mut() = decor;
                    Ok(true)
                }
                _ => {
                    images.insert(KEY, toml_edit::value(true));
                    Ok(true)
                }
            }
        }
    }
}

/// Sets `runtime_type` in an existing runtime table, keeping its other keys
/// and the formatting around the value; returns whether it changed.
fn set_runtime_type(runtime: &mut dyn TableLike, runtime_type: &str) -> bool {
    match runtime.get_mut("runtime_type") {
        Some(Item::Value(v)) if v.as_str() == Some(runtime_type) => false,
        Some(Item::Value(v)) => {
            let decor = v.decor().clone();
            *v = runtime_type.into();
            *v.decor_mut() = decor;
            true
        }
        _ => {
            runtime.insert("runtime_type", toml_edit::value(runtime_type));
            true
        }
    }
}

/// Highest document position of any table under `table`.
fn max_position(table: &Table) -> Option<isize> {
    let mut max = table.position();
    for (_, item) in table.iter() {
        let child = match item {
            Item::Table(t) => max_position(t),
            Item::ArrayOfTables(a) => a.iter().filter_map(max_position).max(),
            _ => None,
        };
        max = max.max(child);
    }
    max
}

/// An I/O failure on a named file: the format crate's, which its atomic
/// write returns too.
pub use wasmbox_format::WriteError as FileError;

fn file_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    FileError::on(action, path)
}

/// Reads a file, treating a missing one as empty: a node without
/// `/etc/containerd/config.toml` runs containerd's defaults.
pub fn read_optional(path: &Path) -> Result<Vec<u8>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(file_err("read", path)(e)),
    }
}

/// Copies the shim binary to `dest` atomically (temp file in the same
/// directory, fsync, mode 0755, rename), so containerd never starts a
/// half-written shim and a running shim that has the old binary open does
/// not make the copy fail with "text file busy". Returns `false` without
/// writing when `dest` already has the same bytes.
pub fn install_file(src: &Path, dest: &Path) -> Result<bool, FileError> {
    let bytes = fs::read(src).map_err(file_err("read", src))?;
    if read_optional(dest)? == bytes {
        let mode = fs::metadata(dest).map_err(file_err("inspect", dest))?;
        if mode.permissions().mode() & 0o7777 == 0o755 {
            return Ok(false);
        }
    }
    replace_file(dest, &bytes, 0o755)?;
    Ok(true)
}

/// Writes the containerd config atomically (temp file in the same directory
/// and rename, so containerd never reads half a file), keeping the original
/// file's permissions, and the first time keeps the original as
/// `config.toml.wasmbox-backup` so an operator can see and undo the edit.
pub fn write_config_atomically(path: &Path, text: &str) -> Result<(), FileError> {
    let mode = match fs::metadata(path) {
        Ok(meta) => {
            let backup = backup_path(path);
            if !backup.exists() {
                let original = fs::read(path).map_err(file_err("read", path))?;
                replace_file(&backup, &original, meta.permissions().mode() & 0o7777)?;
            }
            meta.permissions().mode() & 0o7777
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0o644,
        Err(e) => return Err(file_err("inspect", path)(e)),
    };
    replace_file(path, text.as_bytes(), mode)
}

/// Where [`write_config_atomically`] keeps the original config.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(BACKUP_SUFFIX);
    PathBuf::from(name)
}

/// Creates `dest`'s directory, then replaces the file through the one
/// atomic write of the project ([`wasmbox_format::write_atomic`]: temp file,
/// fsync, chmod, rename, directory fsync).
fn replace_file(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(file_err("create directory", dir))?;
    }
    wasmbox_format::write_atomic(dest, bytes, mode)
}

/// One HTTP request, built without doing I/O so it can be unit-tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Full URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: String,
}

/// The API-server request that sets `label=value` on a node: a JSON merge
/// patch, which adds the label without touching the node's other labels
/// and needs only `patch` on nodes.
pub fn node_label_request(
    service_host: &str,
    service_port: &str,
    node_name: &str,
    token: &str,
    label: &str,
    value: &str,
) -> HttpRequest {
    // An IPv6 service address needs brackets in a URL.
    let host = if service_host.contains(':') && !service_host.starts_with('[') {
        format!("[{service_host}]")
    } else {
        service_host.to_owned()
    };
    let body = serde_json::json!({ "metadata": { "labels": { label: value } } });
    HttpRequest {
        url: format!("https://{host}:{service_port}/api/v1/nodes/{node_name}"),
        headers: vec![
            (
                "Content-Type".to_owned(),
                "application/merge-patch+json".to_owned(),
            ),
            (
                "Authorization".to_owned(),
                format!("Bearer {}", token.trim()),
            ),
            ("Accept".to_owned(), "application/json".to_owned()),
        ],
        body: body.to_string(),
    }
}

/// containerd's major version from `containerd --version` output, e.g.
/// `containerd github.com/containerd/containerd 1.6.20~ds1 ...` or
/// `containerd github.com/containerd/containerd/v2 v2.0.4 ...`.
pub fn parse_containerd_major(version_output: &str) -> Option<u32> {
    version_output.split_whitespace().skip(1).find_map(|word| {
        let word = word.strip_prefix('v').unwrap_or(word);
        let (major, rest) = word.split_once('.')?;
        rest.starts_with(|c: char| c.is_ascii_digit())
            .then(|| major.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_versions() {
        assert_eq!(
            parse_containerd_major(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
            ),
            Some(1)
        );
        assert_eq!(
            parse_containerd_major(
                "containerd github.com/containerd/containerd/v2 v2.0.4 1a43cb6a1035441f9aca8f5666a9b3ef9e70ab20"
            ),
            Some(2)
        );
        assert_eq!(
            parse_containerd_major("containerd containerd.io 1.7.27 05044ec0"),
            Some(1)
        );
        assert_eq!(parse_containerd_major("bash: containerd: not found"), None);
    }

    #[test]
    fn label_request() {
        let r = node_label_request("10.96.0.1", "443", "node-a", "tok\n", NODE_LABEL, "true");
        assert_eq!(r.url, "https://10.96.0.1:443/api/v1/nodes/node-a");
        assert!(
            r.headers
                .contains(&("Authorization".into(), "Bearer tok".into()))
        );
        assert!(
            r.headers
                .contains(&("Content-Type".into(), "application/merge-patch+json".into()))
        );
        assert_eq!(
            r.body,
            r#"{"metadata":{"labels":{"wasmbox.dev/wasmtime":"true"}}}"#
        );
        let v6 = node_label_request("fd00::1", "443", "n", "t", NODE_LABEL, "true");
        assert_eq!(v6.url, "https://[fd00::1]:443/api/v1/nodes/n");
    }

    #[test]
    fn fresh_configs() {
        let v2 = add_runtime("", &RuntimeOptions::default()).unwrap();
        assert!(v2.changed);
        assert_eq!(
            v2.text,
            "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n",
            "a fresh config keeps runc, the default handler containerd would otherwise forget"
        );
        let opts = RuntimeOptions {
            containerd_major: 2,
            ..Default::default()
        };
        let v3 = add_runtime("\n", &opts).unwrap();
        assert!(v3.text.starts_with("version = 3\n"));
        assert!(
            v3.text.contains(
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]"
            )
        );
    }

    #[test]
    fn version_3_configs_get_the_cris_local_image_pull() {
        let opts = RuntimeOptions {
            containerd_major: 2,
            ..Default::default()
        };
        let pulls_locally = |text: &str| {
            let doc: DocumentMut = text.parse().unwrap();
            doc["plugins"]["io.containerd.cri.v1.images"]["use_local_image_pull"].as_bool()
        };
        // A fresh config, and one without the images table.
        assert_eq!(
            pulls_locally(&add_runtime("", &opts).unwrap().text),
            Some(true)
        );
        let bare = "version = 3\n";
        assert_eq!(
            pulls_locally(&add_runtime(bare, &opts).unwrap().text),
            Some(true)
        );
        // `containerd config default` writes the key as false: set in place,
        // its comment and the table's other keys kept.
        let default = "version = 3\n[plugins]\n  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'overlayfs'\n    use_local_image_pull = false # set by ops\n";
        let edit = add_runtime(default, &opts).unwrap();
        assert!(edit.changed);
        assert_eq!(pulls_locally(&edit.text), Some(true));
        assert!(
            edit.text
                .contains("    use_local_image_pull = true # set by ops\n"),
            "{}",
            edit.text
        );
        assert!(edit.text.contains("snapshotter = 'overlayfs'"));
        // Run again: nothing to change, so containerd is not restarted.
        assert!(!add_runtime(&edit.text, &opts).unwrap().changed);
        // Version-2 configs (containerd 1.x) do not get the key.
        assert!(
            !add_runtime("version = 2\n", &RuntimeOptions::default())
                .unwrap()
                .text
                .contains("use_local_image_pull")
        );
    }

    #[test]
    fn appends_byte_exact() {
        let cases = [
            "version = 2\n",
            "version = 2",
            "version = 2\n# trailing comment\n",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n\n# end\n",
            "root = \"/var/lib/containerd\"\n",
        ];
        for original in cases {
            let edit = add_runtime(original, &RuntimeOptions::default()).unwrap();
            assert!(edit.changed);
            let prefix = if original.ends_with('\n') {
                original.to_owned()
            } else {
                format!("{original}\n")
            };
            assert!(
                edit.text.starts_with(&prefix),
                "{original:?} became {:?}",
                edit.text
            );
            let again = add_runtime(&edit.text, &RuntimeOptions::default()).unwrap();
            assert!(!again.changed);
            assert_eq!(again.text, edit.text);
        }
    }

    #[test]
    fn comments_only_config_gets_fresh_config_after_them() {
        let original = "# containerd config, defaults for now\n";
        let edit = add_runtime(original, &RuntimeOptions::default()).unwrap();
        assert!(edit.changed);
        assert_eq!(
            edit.text,
            format!(
                "{original}\n{}",
                add_runtime("", &RuntimeOptions::default()).unwrap().text
            )
        );
        assert!(
            !add_runtime(&edit.text, &RuntimeOptions::default())
                .unwrap()
                .changed
        );
    }

    #[test]
    fn dotted_and_implicit_parents() {
        for original in [
            "version = 2\n[plugins]\n\"io.containerd.grpc.v1.cri\".containerd.snapshotter = \"overlayfs\"\n",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\n",
        ] {
            let edit = add_runtime(original, &RuntimeOptions::default()).unwrap();
            assert!(edit.changed);
            assert!(edit.text.starts_with(original), "{}", edit.text);
            let doc: DocumentMut = edit.text.parse().unwrap();
            assert_eq!(
                doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["wasmtime"]
                    ["runtime_type"]
                    .as_str(),
                Some(DEFAULT_RUNTIME_TYPE),
                "{}",
                edit.text
            );
            assert!(
                !add_runtime(&edit.text, &RuntimeOptions::default())
                    .unwrap()
                    .changed
            );
        }
    }

    #[test]
    fn inline_runtime_table_is_updated_in_place() {
        let original = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\nwasmtime = { runtime_type = \"x\", privileged_without_host_devices = true }\n";
        let edit = add_runtime(original, &RuntimeOptions::default()).unwrap();
        assert!(edit.changed);
        assert_eq!(
            edit.text,
            original.replace("\"x\"", "\"io.containerd.wasmtime.v1\"")
        );
    }

    #[test]
    fn replaces_other_runtime_type_only() {
        let original = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.other.v1\" # old\n  pod_annotations = [\"a\"]\n";
        let edit = add_runtime(original, &RuntimeOptions::default()).unwrap();
        assert!(edit.changed);
        assert_eq!(
            edit.text,
            original.replace("io.containerd.other.v1", "io.containerd.wasmtime.v1")
        );
    }

    #[test]
    fn errors() {
        let opts = RuntimeOptions::default();
        let msg = |text: &str| add_runtime(text, &opts).unwrap_err().to_string();
        let m = msg("version = 2\n[plugins\nx = 1\n");
        assert!(
            m.starts_with(
                "containerd config /etc/containerd/config.toml is not valid TOML (line 2, column"
            ),
            "{m}"
        );
        assert!(m.ends_with("; it was left unchanged"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        assert!(msg("version = 2\nplugins = 3\n").contains("`plugins` that is not a table"));
        assert!(msg("version = \"2\"\n").contains("not an integer"));
        assert!(msg("version = 5\n").contains("version = 5"));
        assert!(msg("version = 2\nplugins = { a = 1 }\n").contains("inline table"));
        assert!(
            msg("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = []\n")
                .contains("`plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes` that is not a table")
        );
    }
}
