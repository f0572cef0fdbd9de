//! `wasmbox`: the CLI. Parses flags and prints results; the work is in the library.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use wasmbox::format;
use wasmbox::image::{
    self, AddSpec, Compression, ImageFormat, ImageInfo, ImageSource, PackOptions, TransferReport,
    copy, short,
};
use wasmbox::location::{Endpoints, Location};
use wasmbox::pack::{PackRequest, module_name_for};
use wasmbox::progress::Progress;
use wasmbox::reference::ImageRef;
use wasmbox::registry::{Registry, RegistryOptions};

/// How to reach a registry (flattened into each command that talks to one).
#[derive(Debug, Clone, Default, clap::Args)]
struct RegistryFlags {
    /// Talk plain HTTP instead of HTTPS (local or test registries only).
    #[arg(long)]
    plain_http: bool,
    /// Trust the CA certificate(s) in this PEM file for the registry's TLS.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (unsafe; for test registries).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
}

impl From<RegistryFlags> for RegistryOptions {
    fn from(f: RegistryFlags) -> Self {
        RegistryOptions {
            plain_http: f.plain_http,
            ca_file: f.ca_file,
            insecure_skip_tls_verify: f.insecure_skip_tls_verify,
        }
    }
}

/// `--format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    /// Docker-compatible `wasi/wasm` image: OCI config and one tar layer.
    Image,
    /// CNCF TAG-Runtime Wasm artifact: Wasm config and one `application/wasm` layer.
    Artifact,
}

impl From<FormatArg> for ImageFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Image => ImageFormat::Image,
            FormatArg::Artifact => ImageFormat::Artifact,
        }
    }
}

/// `--compression`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "wasmbox",
    version,
    about = "Pack WebAssembly modules and components into OCI images, and move them between registries."
)]
struct Cli {
    /// Local image store (an OCI image layout directory).
    #[arg(long, global = true, env = "WASMBOX_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Wrap a .wasm (or .wat) module or component into an OCI image.
    Pack(Box<PackArgs>),
    /// Push an image from the local store to its registry.
    Push {
        reference: ImageRef,
        #[command(flatten)]
        registry: RegistryFlags,
        /// Print a JSON result on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Pull an image from a registry into the local store.
    Pull {
        reference: ImageRef,
        #[command(flatten)]
        registry: RegistryFlags,
        #[arg(long)]
        json: bool,
    },
    /// Copy an image between registries, the store, OCI archives and OCI
    /// layouts, keeping its digest. Each side is REF (a registry),
    /// store:REF, oci-archive:PATH[:REF] or oci:DIR[:REF].
    Copy {
        source: Location,
        destination: Location,
        #[command(flatten)]
        registry: RegistryFlags,
        #[arg(long)]
        json: bool,
    },
    /// Show an image's platform, entrypoint, WASI world, size and layers.
    Inspect {
        /// REF (the store's image, else the registry's), or a location as
        /// `copy` takes it (store:REF, oci-archive:PATH[:REF], oci:DIR[:REF]).
        reference: String,
        /// Ask the registry even when the image is in the local store.
        #[arg(long)]
        remote: bool,
        #[command(flatten)]
        registry: RegistryFlags,
        #[arg(long)]
        json: bool,
    },
    /// Store credentials for a registry in the Docker config.
    Login {
        registry: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        options: RegistryFlags,
    },
    /// Remove the stored credentials for a registry.
    Logout { registry: String },
    /// List the images in the local store.
    Images {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image from the local store.
    Rm { reference: ImageRef },
    /// Run an image (from the local store, or any location `copy` takes), or
    /// a module file, with the shim's engine but without containerd.
    Run {
        /// A .wasm/.wat file, an image reference in the local store, or
        /// oci-archive:PATH[:REF], oci:DIR[:REF], docker://REF.
        target: String,
        /// Environment variable for the guest (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Host directory for the guest (repeatable).
        #[arg(long = "dir", value_name = "HOST[:GUEST[:ro]]")]
        dirs: Vec<wasmbox::run::DirSpec>,
        /// For an image read from a registry (`docker://REF`).
        #[command(flatten)]
        registry: RegistryFlags,
        /// Run only an image this containers policy.json accepts (its
        /// signatures are read from the image's registry), as the shim's
        /// WASMBOX_POLICY does.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Arguments after the module (replace the image's Cmd).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Make an ECDSA P-256 key pair as cosign does: PREFIX.key (sealed with
    /// the password in WASMBOX_PASSWORD or COSIGN_PASSWORD, else asked for)
    /// and PREFIX.pub.
    GenerateKey {
        #[arg(long, default_value = "cosign", value_name = "PREFIX")]
        output_key_prefix: String,
    },
    /// Sign an image in a registry, the way cosign stores signatures, with a
    /// private key (cosign's or `wasmbox generate-key`'s), or as notation
    /// does (`--format notation --cert`).
    Sign {
        reference: ImageRef,
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Which of cosign's forms to write: the bundle referrer (cosign 3),
        /// the `.sig` tag (cosign 2, podman, skopeo, CRI-O), or both; or a
        /// notation signature (with --cert).
        #[arg(long, value_enum, default_value = "both")]
        format: SignFormatArg,
        /// The certificate (chain, PEM, leaf first) of --key, for --format notation.
        #[arg(long, value_name = "PEM")]
        cert: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryFlags,
        #[arg(long)]
        json: bool,
    },
    /// Check an image's signatures: a cosign signature by --key, what a
    /// containers policy.json (--policy) asks of the image, or a notation
    /// signature under notation's trust policy (--notation).
    #[command(group = clap::ArgGroup::new("how").required(true))]
    Verify {
        reference: ImageRef,
        /// A public key (cosign.pub): accept a cosign signature by it.
        #[arg(long, value_name = "KEY", group = "how")]
        key: Option<PathBuf>,
        /// A containers policy.json (containers-policy.json(5)).
        #[arg(long, value_name = "FILE", group = "how")]
        policy: Option<PathBuf>,
        /// notation's configuration directory (its trustpolicy.json and
        /// truststore/): accept a notation signature as `notation verify` would.
        #[arg(long, value_name = "DIR", group = "how")]
        notation: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryFlags,
        #[arg(long)]
        json: bool,
    },
    /// Attach an SPDX 2.3 SBOM of an image's module to the image in its
    /// registry (as `pack --sbom` does), and print it.
    Sbom {
        reference: ImageRef,
        #[command(flatten)]
        registry: RegistryFlags,
        /// Print the document only; attach nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

/// `wasmbox sign --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SignFormatArg {
    Bundle,
    Legacy,
    Both,
    /// A notation (Notary Project) JWS signature; needs --cert.
    Notation,
}

#[derive(clap::Args)]
struct PackArgs {
    /// The module or component: a .wasm binary or a .wat text file.
    module: PathBuf,
    /// Name of the image, e.g. registry.example.com/team/hello:v1.
    #[arg(short = 't', long = "tag")]
    tag: ImageRef,
    /// Push the image after packing it.
    #[arg(long)]
    push: bool,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Also write the image as a tar for `ctr image import` / `docker load`.
    #[arg(short = 'o', long = "output", value_name = "ARCHIVE.tar")]
    output: Option<PathBuf>,
    /// Also write the image into this OCI image layout directory.
    #[arg(long, value_name = "DIR")]
    oci_layout: Option<PathBuf>,
    /// Copy a host file or directory into the image (image format only).
    #[arg(long = "add", value_name = "SRC:DEST")]
    adds: Vec<AddSpec>,
    /// Environment variable for the program.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Default argument after the module (repeatable; becomes the image's Cmd).
    #[arg(long = "arg", value_name = "VALUE", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Working directory of the program.
    #[arg(long)]
    workdir: Option<String>,
    /// Image config label.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Manifest annotation.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    #[arg(long, value_enum, default_value = "image")]
    format: FormatArg,
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionArg,
    /// Image os: wasi (Docker's `--platform wasi/wasm`, the default for --format image), wasip1 or wasip2 (the WASI version: the default for --format artifact, detected from the module).
    #[arg(long, value_parser = ["wasip1", "wasip2", "wasi"])]
    os: Option<String>,
    /// Exported function to run when the module is not a WASI command.
    #[arg(long, value_name = "NAME")]
    export: Option<String>,
    /// Attach an SPDX 2.3 SBOM of the module to the pushed image (as an OCI
    /// referrer); needs --push and a module with a producers section.
    #[arg(long, requires = "push")]
    sbom: bool,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run {
        target,
        env,
        dirs,
        registry,
        args,
        policy,
    } = &cli.command
    {
        let registry: RegistryOptions = registry.clone().into();
        let endpoints = Endpoints {
            store_dir: cli.store.as_deref(),
            registry: &registry,
        };
        // The engine runs the guest on its own runtime, so this stays synchronous.
        let checked = match policy {
            Some(policy) => verified_target(&endpoints, target, policy),
            None => Ok(target.clone()),
        };
        let target = match checked {
            Ok(t) => t,
            Err(e) => {
                eprintln!("wasmbox: error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let request = wasmbox::run::RunRequest {
            target: &target,
            args,
            env,
            dirs,
        };
        return match run_guest(&endpoints, &request) {
            Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("wasmbox: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Sbom {
        reference,
        registry,
        dry_run,
    } = &cli.command
    {
        return match sbom(
            cli.store.as_deref(),
            reference,
            &registry.clone().into(),
            *dry_run,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wasmbox: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmbox: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmbox: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `wasmbox run --policy`: checks the image `target` names against the
/// policy and returns the target to run, pinned to the digest checked (an
/// image of the store is checked by the digest the store holds).
fn verified_target(endpoints: &Endpoints, target: &str, policy_path: &Path) -> Result<String> {
    let policy = wasmbox_trust::Policy::load(policy_path)?;
    if Path::new(target).is_file() {
        bail!(
            "{target} is a module file; --policy checks images from a registry (REF in the store, or docker://REF)"
        );
    }
    let location: Location = target.parse().map_err(anyhow::Error::msg)?;
    let (reference, stored_digest) = match location {
        Location::Registry(r) if target.starts_with("docker://") => (r, None),
        Location::Registry(r) | Location::Store(r) => {
            let stored = endpoints
                .store()?
                .resolve(&r)?
                .with_context(|| format!("{r} is not in the local store"))?;
            (r, Some(stored.manifest.digest().to_string()))
        }
        other => bail!(
            "{other} is not in a registry; --policy checks images whose signatures a registry holds (REF in the store, or docker://REF)"
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let registry = Registry::new(reference.registry(), endpoints.registry)?;
    let repo = wasmbox::referrers::Repository::new(&registry, &reference);
    let digest = match stored_digest {
        Some(d) => d,
        None => runtime.block_on(repo.resolve())?.digest().to_string(),
    };
    let image = wasmbox_trust::DockerRef::parse(reference.as_str())
        .with_context(|| format!("{reference} is not a reference a policy can scope"))?
        .with_digest(&digest);
    let verdict = runtime.block_on(wasmbox_trust::verify::check(
        &policy, &image, &digest, &repo,
    ))?;
    eprintln!(
        "wasmbox: policy accepts {image}: {}",
        verdict.accepted_by.join(", ")
    );
    let repository = format!(
        "{}/{}",
        reference.registry(),
        reference.reference().repository()
    );
    Ok(if target.starts_with("docker://") {
        format!("docker://{repository}@{digest}")
    } else {
        target.to_string()
    })
}

/// `wasmbox run`: returns the guest's exit status.
fn run_guest(endpoints: &Endpoints, request: &wasmbox::run::RunRequest) -> Result<i32> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let spec = wasmbox::run::prepare(endpoints, request, scratch.path())?;
    let engine = wasmbox_engine::Engine::for_spec(&spec)?;
    let program = engine.load(&spec)?;
    let (_kill, not_killed) = wasmbox_engine::KillSwitch::new();
    Ok(engine.run(&program, &spec, not_killed))
}

/// `wasmbox sbom`: the module is read from the image in the registry (as
/// `wasmbox run docker://REF` reads it, on its own runtime), then the
/// document is attached on another.
fn sbom(
    store_dir: Option<&Path>,
    reference: &ImageRef,
    options: &RegistryOptions,
    dry_run: bool,
) -> Result<()> {
    let endpoints = Endpoints {
        store_dir,
        registry: options,
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let target = format!("docker://{reference}");
    let request = wasmbox::run::RunRequest {
        target: &target,
        args: &[],
        env: &[],
        dirs: &[],
    };
    // The module as `wasmbox run` would load it from the image.
    let spec = wasmbox::run::prepare(&endpoints, &request, scratch.path())?;
    let module = wasmbox::module::WasmModule::load(&spec.module, spec.export.as_deref())?;
    let file_name = spec
        .module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module.wasm".into());
    let document = wasmbox::sbom::spdx(
        &module,
        &file_name,
        reference.as_str(),
        std::time::SystemTime::now(),
    )?;
    if !dry_run {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let registry = Registry::new(reference.registry(), options)?;
        let digest = runtime.block_on(wasmbox::sbom::attach(&registry, reference, &document))?;
        eprintln!("Attached SBOM {digest} to {reference}");
    }
    println!("{}", String::from_utf8_lossy(&document));
    Ok(())
}

/// The password for a sealed key: WASMBOX_PASSWORD, else COSIGN_PASSWORD
/// (so scripts written for cosign work), else asked for on the terminal.
fn password(key: &Path) -> Result<Vec<u8>> {
    for var in ["WASMBOX_PASSWORD", "COSIGN_PASSWORD"] {
        if let Some(p) = std::env::var_os(var) {
            return Ok(p.into_encoded_bytes());
        }
    }
    let pem =
        std::fs::read(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    if !String::from_utf8_lossy(&pem).contains("ENCRYPTED") {
        return Ok(Vec::new());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!(
            "the key {} is sealed with a password: set WASMBOX_PASSWORD (there is no terminal to ask on)",
            key.display()
        );
    }
    let p = rpassword::prompt_password(format!("Password for {}: ", key.display()))
        .context("reading the password")?;
    Ok(p.into_bytes())
}

/// `wasmbox generate-key`: refuses to replace either file.
fn generate_key(prefix: &str) -> Result<()> {
    let private = PathBuf::from(format!("{prefix}.key"));
    let public = PathBuf::from(format!("{prefix}.pub"));
    for path in [&private, &public] {
        if path.exists() {
            bail!(
                "{} exists; remove it or choose another --output-key-prefix",
                path.display()
            );
        }
    }
    let password = match ["WASMBOX_PASSWORD", "COSIGN_PASSWORD"]
        .iter()
        .find_map(std::env::var_os)
    {
        Some(p) => p.into_encoded_bytes(),
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            let first = rpassword::prompt_password("Password for the private key: ")
                .context("reading the password")?;
            let again =
                rpassword::prompt_password("Password again: ").context("reading the password")?;
            if first != again {
                bail!("the two passwords differ; nothing was written");
            }
            first.into_bytes()
        }
        None => bail!(
            "set WASMBOX_PASSWORD to the password for the private key (there is no terminal to ask on)"
        ),
    };
    let key = wasmbox_trust::PrivateKey::generate();
    let sealed = key.to_encrypted_pem(&password);
    format::write_atomic(&private, sealed.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", private.display()))?;
    if let Err(e) = format::write_atomic(&public, key.public_key().to_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&private);
        return Err(anyhow::Error::new(e).context(format!("writing {}", public.display())));
    }
    println!("Private key written to {}", private.display());
    println!("Public key written to {}", public.display());
    Ok(())
}

fn open_store(dir: Option<&Path>) -> Result<wasmbox::store::Store> {
    Endpoints {
        store_dir: dir,
        registry: &RegistryOptions::default(),
    }
    .store()
}

async fn run(cli: Cli) -> Result<()> {
    let store_dir = cli.store.as_deref();
    match cli.command {
        Command::GenerateKey { output_key_prefix } => generate_key(&output_key_prefix),
        Command::Sbom { .. } => unreachable!("handled before the runtime starts"),
        Command::Sign {
            reference,
            key,
            format,
            cert,
            registry,
            json,
        } => {
            let password = password(&key)?;
            let pem = std::fs::read(&key)
                .with_context(|| format!("cannot read the key {}", key.display()))?;
            let what = key.display().to_string();
            let registry = Registry::new(reference.registry(), &registry.into())?;
            let signed = match (format, cert) {
                (SignFormatArg::Notation, Some(cert)) => {
                    let chain_pem = std::fs::read(&cert).with_context(|| {
                        format!("cannot read the certificate {}", cert.display())
                    })?;
                    let chain = wasmbox_trust::notation::certificate_chain(
                        &chain_pem,
                        &cert.display().to_string(),
                    )?;
                    let key =
                        wasmbox_trust::notation::SigningKey::from_pem(&pem, &password, &what)?;
                    wasmbox::signing::sign_notation(&registry, &reference, &key, &chain).await?
                }
                (SignFormatArg::Notation, None) => {
                    bail!(
                        "--format notation needs --cert, the signing key's certificate (chain) as PEM"
                    )
                }
                (_, Some(_)) => bail!("--cert is for --format notation only"),
                (format, None) => {
                    let key = wasmbox_trust::PrivateKey::from_pem(&pem, &password, &what)?;
                    let forms = match format {
                        SignFormatArg::Bundle => wasmbox::signing::SignatureForms::Bundle,
                        SignFormatArg::Legacy => wasmbox::signing::SignatureForms::Legacy,
                        _ => wasmbox::signing::SignatureForms::Both,
                    };
                    wasmbox::signing::sign(&registry, &reference, &key, forms).await?
                }
            };
            if json {
                println!(
                    "{}",
                    json!({"reference": reference.to_string(), "digest": signed.digest, "written": signed.written})
                );
            } else {
                println!("Signed {reference}@{}", signed.digest);
                for line in &signed.written {
                    println!("  {line}");
                }
            }
            Ok(())
        }
        Command::Verify {
            reference,
            notation: Some(dir),
            registry,
            json,
            ..
        } => {
            let policy = wasmbox_trust::notation::TrustPolicy::load(&dir)?;
            let registry = Registry::new(reference.registry(), &registry.into())?;
            let (digest, accepted) =
                wasmbox::signing::verify_notation(&registry, &reference, &policy).await?;
            if json {
                println!(
                    "{}",
                    json!({"reference": reference.to_string(), "digest": digest, "acceptedBy": [accepted]})
                );
            } else {
                println!("Verified {reference}@{digest}");
                println!("  accepted: {accepted}");
            }
            Ok(())
        }
        Command::Verify {
            reference,
            key,
            policy,
            registry,
            json,
            ..
        } => {
            let policy = match (&key, &policy) {
                (Some(key), _) => wasmbox::signing::key_policy(key)?,
                (None, Some(path)) => wasmbox_trust::Policy::load(path)?,
                (None, None) => bail!("wasmbox verify needs --key or --policy"),
            };
            let registry = Registry::new(reference.registry(), &registry.into())?;
            let (digest, verdict) =
                wasmbox::signing::verify(&registry, &reference, &policy).await?;
            if json {
                println!(
                    "{}",
                    json!({"reference": reference.to_string(), "digest": digest, "scope": verdict.scope, "acceptedBy": verdict.accepted_by})
                );
            } else {
                println!(
                    "Verified {reference}@{digest} (policy scope {})",
                    verdict.scope
                );
                for line in &verdict.accepted_by {
                    println!("  accepted: {line}");
                }
            }
            Ok(())
        }
        Command::Pack(args) => pack(store_dir, *args).await,
        Command::Push {
            reference,
            registry,
            json,
        } => {
            let source = Location::Store(reference.clone());
            let destination = Location::Registry(reference);
            transfer(
                store_dir,
                "Pushed",
                &source,
                &destination,
                &registry.into(),
                json,
            )
            .await
        }
        Command::Pull {
            reference,
            registry,
            json,
        } => {
            let source = Location::Registry(reference.clone());
            let destination = Location::Store(reference);
            transfer(
                store_dir,
                "Pulled",
                &source,
                &destination,
                &registry.into(),
                json,
            )
            .await
        }
        Command::Copy {
            source,
            destination,
            registry,
            json,
        } => {
            transfer(
                store_dir,
                "Copied",
                &source,
                &destination,
                &registry.into(),
                json,
            )
            .await
        }
        Command::Inspect {
            reference,
            remote,
            registry,
            json,
        } => {
            let info = inspect(store_dir, &reference, remote, &registry.into()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_info(&info);
            }
            Ok(())
        }
        Command::Login {
            registry,
            username,
            password_stdin,
            options,
        } => {
            if !password_stdin {
                bail!(
                    "pass the password on standard input with --password-stdin (so it stays out of the shell history)"
                );
            }
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                bail!("no password on standard input");
            }
            let auth = oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone());
            Registry::with_auth(&registry, &options.into(), auth)?
                .check_login(&format!("{username}/wasmbox-login-check"))
                .await?;
            let path = wasmbox::auth::save_login(&registry, &username, &password)?;
            eprintln!("Credentials saved in {}", path.display());
            println!("Login Succeeded");
            Ok(())
        }
        Command::Logout { registry } => {
            wasmbox::auth::remove_login(&registry)?;
            println!("Removed login credentials for {registry}");
            Ok(())
        }
        Command::Images { json } => images(store_dir, json),
        Command::Rm { reference } => {
            open_store(store_dir)?.remove(&reference)?;
            println!("Deleted {reference}");
            Ok(())
        }
        Command::Run { .. } => {
            bail!("internal error: `run` is handled before the async runtime starts")
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wasmbox",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Copies `source` to `destination` and reports it as `verb`.
async fn transfer(
    store_dir: Option<&Path>,
    verb: &str,
    source: &Location,
    destination: &Location,
    options: &RegistryOptions,
    json: bool,
) -> Result<()> {
    let endpoints = Endpoints {
        store_dir,
        registry: options,
    };
    let from = source.open_source(&endpoints)?;
    let mut to = destination.open_destination(&endpoints, source.image_ref())?;
    let report = copy(&from, &mut to, &Progress::new(!json)).await?;
    print_transfer(verb, &report, json);
    Ok(())
}

fn parse_key_values(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>> {
    values
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} {kv}: expected KEY=VALUE"),
        })
        .collect()
}

async fn pack(store_dir: Option<&Path>, args: PackArgs) -> Result<()> {
    parse_key_values("--env", &args.env)?; // validated only: the image keeps the list as given
    let labels = parse_key_values("--label", &args.labels)?;
    let annotations = parse_key_values("--annotation", &args.annotations)?;
    let options = PackOptions {
        module_name: module_name_for(&args.module)?,
        adds: args.adds,
        env: args.env,
        args: args.args,
        workdir: args.workdir,
        labels,
        annotations,
        format: args.format.into(),
        compression: args.compression.into(),
        os: args.os,
        created: PackOptions::created_from_env()?,
    };
    // The SBOM is made before anything is stored: a module it cannot
    // describe stops the pack.
    let sbom = if args.sbom {
        let module = wasmbox::module::WasmModule::load(&args.module, args.export.as_deref())?;
        Some(wasmbox::sbom::spdx(
            &module,
            &options.module_name,
            args.tag.as_str(),
            options.created,
        )?)
    } else {
        None
    };
    let registry: RegistryOptions = args.registry.clone().into();
    let endpoints = Endpoints {
        store_dir,
        registry: &registry,
    };
    let packed = wasmbox::pack::pack(
        &endpoints,
        PackRequest {
            module: &args.module,
            export: args.export.as_deref(),
            tag: &args.tag,
            options,
            archive: args.output.clone(),
            oci_layout: args.oci_layout.clone(),
        },
    )
    .await?;
    if !args.json {
        println!(
            "Packed {} {} ({}/{}, {})",
            args.tag,
            packed.digest,
            packed.os,
            format::ARCH_WASM,
            packed.world
        );
    }
    let mut pushed = None;
    if args.push {
        let source = Location::Store(args.tag.clone()).open_source(&endpoints)?;
        let mut destination =
            Location::Registry(args.tag.clone()).open_destination(&endpoints, None)?;
        let report = copy(&source, &mut destination, &Progress::new(!args.json))
            .await
            .with_context(|| {
                format!(
                    "the image is in the local store; retry with `wasmbox push {}`",
                    args.tag
                )
            })
            .map_err(swap_context)?;
        if !args.json {
            print_transfer("Pushed", &report, false);
        }
        pushed = Some(report);
    }
    let mut sbom_digest = None;
    if let Some(document) = &sbom {
        let registry = Registry::new(args.tag.registry(), &registry)?;
        let digest = wasmbox::sbom::attach(&registry, &args.tag, document).await?;
        if !args.json {
            println!("Attached SBOM {digest} (application/spdx+json)");
        }
        sbom_digest = Some(digest);
    }
    if args.json {
        let out = json!({
            "sbom": sbom_digest,
            "reference": args.tag.to_string(),
            "digest": packed.digest,
            "os": packed.os,
            "architecture": format::ARCH_WASM,
            "wasiWorld": packed.world,
            "archive": args.output,
            "ociLayout": args.oci_layout,
            "push": pushed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Puts the retry hint after the cause: "pushing …: 401 …; the image is in the local store …".
fn swap_context(e: anyhow::Error) -> anyhow::Error {
    let hint = e.to_string();
    let cause = e.root_cause().to_string();
    anyhow::anyhow!("{cause} ({hint})")
}

/// Describes the image at `target`: a location as `copy` takes it, or a
/// plain reference, looked up in the store first unless `remote`.
async fn inspect(
    store_dir: Option<&Path>,
    target: &str,
    remote: bool,
    options: &RegistryOptions,
) -> Result<ImageInfo> {
    let mut location: Location = target.parse().map_err(anyhow::Error::msg)?;
    let endpoints = Endpoints {
        store_dir,
        registry: options,
    };
    if let Location::Registry(reference) = &location
        && !remote
        && !target.starts_with("docker://")
        && endpoints.store()?.resolve(reference)?.is_some()
    {
        location = Location::Store(reference.clone());
    }
    let name = match location.image_ref() {
        Some(r) => r.to_string(),
        None => location.to_string(),
    };
    let source = location.open_source(&endpoints)?;
    let manifest = source.manifest().await?;
    let config = image::read_blob(&source, manifest.config()).await?;
    let mut info = image::describe(&name, manifest.bytes(), &config)?;
    if let Location::Registry(reference) = &location {
        // What is attached is extra: a registry that will not list it
        // (no access to the referrers, say) does not stop the inspect.
        let registry = Registry::new(reference.registry(), options)?;
        match wasmbox::referrers::attached(&registry, reference).await {
            Ok(attached) => info.attached = Some(attached),
            Err(e) => eprintln!(
                "wasmbox: warning: cannot list the signatures and SBOMs of {reference}: {e:#}"
            ),
        }
    }
    Ok(info)
}

fn print_info(info: &ImageInfo) {
    let row = |k: &str, v: &str| println!("{:<12} {v}", format!("{k}:"));
    row("Reference", &info.reference);
    row("Digest", &info.digest);
    row("Media type", &info.media_type);
    row("Format", &info.format);
    row("Platform", &format!("{}/{}", info.os, info.architecture));
    if !info.entrypoint.is_empty() {
        row("Entrypoint", &info.entrypoint.join(" "));
    }
    if !info.cmd.is_empty() {
        row("Cmd", &info.cmd.join(" "));
    }
    for e in &info.env {
        row("Env", e);
    }
    if let Some(dir) = &info.working_dir {
        row("WorkingDir", dir);
    }
    row(
        "WASI world",
        info.wasi_world.as_deref().unwrap_or("unknown"),
    );
    if let Some(created) = &info.created {
        row("Created", created);
    }
    row(
        "Size",
        &format!("{} ({} bytes)", human_size(info.size), info.size),
    );
    row(
        "Config",
        &format!("{}  {}", info.config.media_type, info.config.digest),
    );
    println!("Layers:");
    for l in &info.layers {
        println!(
            "  {:<48} {:>10}  {}",
            l.media_type,
            human_size(l.size),
            l.digest
        );
    }
    if let Some(attached) = &info.attached {
        for (kind, title) in [
            ("signature", "Signatures"),
            ("sbom", "SBOMs"),
            ("other", "Attached"),
        ] {
            let of_kind: Vec<_> = attached.iter().filter(|a| a.kind == kind).collect();
            if of_kind.is_empty() && kind == "other" {
                continue;
            }
            println!(
                "{title}: {}",
                if of_kind.is_empty() { "none" } else { "" }.trim_end()
            );
            for a in of_kind {
                println!("  {:<48} {}", a.format, a.digest);
            }
        }
    }
}

fn print_transfer(verb: &str, report: &TransferReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
        return;
    }
    for b in &report.blobs {
        let state = if b.skipped { "exists" } else { "done" };
        eprintln!("  {} {:>10}  {state}", short(&b.digest), human_size(b.size));
    }
    println!("{verb} {} {}", report.reference, report.digest);
}

fn images(store_dir: Option<&Path>, json: bool) -> Result<()> {
    let store = open_store(store_dir)?;
    let mut rows = Vec::new();
    for stored in store.list()? {
        let (manifest, config) = store.manifest_and_config(&stored)?;
        rows.push(image::describe(&stored.name, manifest.bytes(), &config)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<50} {:<19} {:<12} {:>10}  WASI WORLD",
        "REFERENCE", "DIGEST", "PLATFORM", "SIZE"
    );
    for r in rows {
        println!(
            "{:<50} {:<19} {:<12} {:>10}  {}",
            r.reference,
            short(&r.digest),
            format!("{}/{}", r.os, r.architecture),
            human_size(r.size),
            r.wasi_world.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
