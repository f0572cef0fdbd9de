//! The real signing tools — cosign, notation, oras — that
//! `scripts/signing-tools.sh` unpacks from Debian unstable into
//! `.cache/signing-tools/bin` (`make test` runs it first), each run with a
//! private HOME so nothing of the machine's is read or written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The tools' directory; fails the test with the way to get them.
pub fn tools_dir() -> PathBuf {
    let dir = match std::env::var_os("WASMBOX_SIGNING_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => crate::docker::workspace_root().join(".cache/signing-tools/bin"),
    };
    assert!(
        dir.join("cosign").is_file()
            && dir.join("notation").is_file()
            && dir.join("oras").is_file(),
        "cosign, notation and oras are not in {}; run `make signing-tools` (make test does)",
        dir.display()
    );
    dir
}

/// One of the tools, with its own HOME (and so its own config) in `home`.
pub struct Tool {
    bin: PathBuf,
    home: PathBuf,
}

impl Tool {
    pub fn new(name: &str, home: &Path) -> Tool {
        std::fs::create_dir_all(home).unwrap();
        Tool {
            bin: tools_dir().join(name),
            home: home.to_path_buf(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("DOCKER_CONFIG", self.home.join(".docker"))
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// cosign, signing offline with a key: the signing config names no
/// transparency log or certificate authority.
pub struct Cosign {
    pub tool: Tool,
}

/// The flags every cosign command needs for a plain-HTTP loopback registry.
const REGISTRY_FLAGS: [&str; 2] = ["--allow-insecure-registry", "--allow-http-registry"];

impl Cosign {
    pub fn new(home: &Path) -> Cosign {
        Cosign {
            tool: Tool::new("cosign", home),
        }
    }

    /// `cosign generate-key-pair` with `password`: `home/cosign.{key,pub}`.
    pub fn generate_key_pair(&self, password: &str) -> (PathBuf, PathBuf) {
        self.tool
            .ok(&["generate-key-pair"], &[("COSIGN_PASSWORD", password)]);
        (
            self.tool.home.join("cosign.key"),
            self.tool.home.join("cosign.pub"),
        )
    }

    /// Signs `image_at_digest` with cosign 3's default, the bundle referrer.
    pub fn sign_bundle(&self, key: &Path, password: &str, image_at_digest: &str) {
        let config = self.tool.home.join("signing-config.json");
        if !config.exists() {
            self.tool.ok(
                &[
                    "signing-config",
                    "create",
                    "--no-default-fulcio",
                    "--no-default-rekor",
                    "--no-default-oidc",
                    "--no-default-tsa",
                    "--out",
                    config.to_str().unwrap(),
                ],
                &[],
            );
        }
        let mut args = vec![
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--signing-config",
            config.to_str().unwrap(),
            "--yes",
        ];
        args.extend(REGISTRY_FLAGS);
        args.push(image_at_digest);
        self.tool.ok(&args, &[("COSIGN_PASSWORD", password)]);
    }

    /// Signs `image_at_digest` in the legacy form (the `.sig` tag).
    pub fn sign_legacy(&self, key: &Path, password: &str, image_at_digest: &str) {
        let mut args = vec![
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--new-bundle-format=false",
            "--use-signing-config=false",
            "--tlog-upload=false",
            "--yes",
        ];
        args.extend(REGISTRY_FLAGS);
        args.push(image_at_digest);
        self.tool.ok(&args, &[("COSIGN_PASSWORD", password)]);
    }

    /// `cosign verify --key` without a transparency log.
    pub fn verify(&self, public_key: &Path, image: &str) -> Output {
        let mut args = vec![
            "verify",
            "--key",
            public_key.to_str().unwrap(),
            "--insecure-ignore-tlog",
        ];
        args.extend(REGISTRY_FLAGS);
        args.push(image);
        self.tool.run(&args, &[])
    }
}
