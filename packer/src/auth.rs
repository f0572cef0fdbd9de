//! Registry credentials, kept where Docker keeps them (`$DOCKER_CONFIG/config.json`
//! or `~/.docker/config.json`, `auths` and credential helpers) so that
//! `docker login` and `wasmbox login` see each other's logins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde_json::{Map, Value};

/// The key Docker uses for a registry host in `config.json`.
pub fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        other => other.to_string(),
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = dirs::home_dir().context("cannot find the home directory; set DOCKER_CONFIG")?;
    Ok(home.join(".docker").join("config.json"))
}

/// The credentials stored for `registry`, or anonymous access when there are none.
pub fn credentials(registry: &str) -> Result<RegistryAuth> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let path = config_path()?;
    if !path.exists() {
        return Ok(RegistryAuth::Anonymous);
    }
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    match docker_credential::get_credential_from_reader(file, &server_key(registry)) {
        Ok(DockerCredential::UsernamePassword(user, pass)) => Ok(RegistryAuth::Basic(user, pass)),
        Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(E::NoCredentialConfigured) | Err(E::ConfigNotFound) => Ok(RegistryAuth::Anonymous),
        Err(e) => bail!(
            "cannot get the credentials for {registry} from {}: {}",
            path.display(),
            e.to_string().lines().next().unwrap_or_default()
        ),
    }
}

fn read_config() -> Result<(PathBuf, Map<String, Value>)> {
    let path = config_path()?;
    let config = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            _ => bail!(
                "{} is not a JSON object; fix or remove it and log in again",
                path.display()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok((path, config))
}

fn write_config(path: &Path, config: &Map<String, Value>) -> Result<()> {
    let dir = path.parent().context("config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut data = serde_json::to_vec_pretty(config)?;
    data.push(b'\n');
    // 0600: the file holds credentials.
    crate::format::write_atomic(path, &data, 0o600)?;
    Ok(())
}

/// The credential helper configured for `key`, if any (`credHelpers`, then `credsStore`).
fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
    config
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn run_helper(helper: &str, action: &str, input: &str) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the credential helper {program}"))?;
    child
        .stdin
        .take()
        .context("helper stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {action} failed: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Saves `user`/`password` for `registry` (in its credential helper when one is configured).
pub fn save_login(registry: &str, user: &str, password: &str) -> Result<PathBuf> {
    let key = server_key(registry);
    let (path, mut config) = read_config()?;
    if let Some(helper) = helper_for(&config, &key) {
        let input = serde_json::json!({"ServerURL": key, "Username": user, "Secret": password});
        run_helper(&helper, "store", &input.to_string())?;
        return Ok(path);
    }
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        bail!("`auths` in {} is not a JSON object", path.display());
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    auths.insert(key, serde_json::json!({ "auth": token }));
    write_config(&path, &config)?;
    Ok(path)
}

/// Forgets the credentials for `registry`. Errors when there were none.
pub fn remove_login(registry: &str) -> Result<PathBuf> {
    let key = server_key(registry);
    let (path, mut config) = read_config()?;
    if let Some(helper) = helper_for(&config, &key) {
        run_helper(&helper, "erase", &key)?;
        return Ok(path);
    }
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove(&key));
    if removed.is_none() {
        bail!(
            "not logged in to {registry} (no entry in {})",
            path.display()
        );
    }
    write_config(&path, &config)?;
    Ok(path)
}
