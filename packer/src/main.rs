//! `wasmbox`: the CLI. Parses flags and prints results; the work is in the library.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use wasmbox::format;
use wasmbox::image::{self, AddSpec, Compression, ImageFormat, ImageInfo, PackOptions};
use wasmbox::module::WasmModule;
use wasmbox::progress::Progress;
use wasmbox::reference::ImageRef;
use wasmbox::registry::{Registry, RegistryOptions, TransferReport, short};
use wasmbox::store::Store;

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
        registry: RegistryOptions,
        /// Print a JSON result on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Pull an image from a registry into the local store.
    Pull {
        reference: ImageRef,
        #[command(flatten)]
        registry: RegistryOptions,
        #[arg(long)]
        json: bool,
    },
    /// Show an image's platform, entrypoint, WASI world, size and layers.
    Inspect {
        reference: ImageRef,
        /// Ask the registry even when the image is in the local store.
        #[arg(long)]
        remote: bool,
        #[command(flatten)]
        registry: RegistryOptions,
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
        options: RegistryOptions,
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
    /// Run an image from the local store, or a module file, with the shim's
    /// engine but without containerd.
    Run {
        /// Image reference in the local store, or a .wasm/.wat file.
        target: String,
        /// Environment variable for the guest (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Host directory for the guest (repeatable).
        #[arg(long = "dir", value_name = "HOST[:GUEST[:ro]]")]
        dirs: Vec<wasmbox::run::DirSpec>,
        /// Arguments after the module (replace the image's Cmd).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
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
    registry: RegistryOptions,
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
    format: ImageFormat,
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compression,
    /// Image os: wasi (Docker's `--platform wasi/wasm`, the default for --format image), wasip1 or wasip2 (the WASI version: the default for --format artifact, detected from the module).
    #[arg(long, value_parser = ["wasip1", "wasip2", "wasi"])]
    os: Option<String>,
    /// Exported function to run when the module is not a WASI command.
    #[arg(long, value_name = "NAME")]
    export: Option<String>,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run {
        target,
        env,
        dirs,
        args,
    } = &cli.command
    {
        // The engine runs the guest on its own runtime, so this stays synchronous.
        let request = wasmbox::run::RunRequest {
            target,
            args,
            env,
            dirs,
        };
        return match run_guest(cli.store.as_deref(), &request) {
            Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
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

/// `wasmbox run`: returns the guest's exit status.
fn run_guest(store_dir: Option<&Path>, request: &wasmbox::run::RunRequest) -> Result<i32> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let spec = wasmbox::run::prepare(store_dir, request, scratch.path())?;
    let engine = wasmbox_engine::Engine::for_spec(&spec)?;
    let program = engine.load(&spec)?;
    let (_kill, not_killed) = wasmbox_engine::KillSwitch::new();
    Ok(engine.run(&program, &spec, not_killed))
}

fn open_store(dir: Option<&Path>) -> Result<Store> {
    match dir {
        Some(d) => Store::open(d),
        None => Store::open(&Store::default_root()?),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let store_dir = cli.store.as_deref();
    match cli.command {
        Command::Pack(args) => pack(store_dir, *args).await,
        Command::Push {
            reference,
            registry,
            json,
        } => transfer(store_dir, Direction::Push, &reference, &registry, json).await,
        Command::Pull {
            reference,
            registry,
            json,
        } => transfer(store_dir, Direction::Pull, &reference, &registry, json).await,
        Command::Inspect {
            reference,
            remote,
            registry,
            json,
        } => {
            let info = inspect(store_dir, &reference, remote, &registry).await?;
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
            Registry::with_auth(&registry, &options, auth)?
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

enum Direction {
    Push,
    Pull,
}

async fn transfer(
    store_dir: Option<&Path>,
    direction: Direction,
    reference: &ImageRef,
    options: &RegistryOptions,
    json: bool,
) -> Result<()> {
    let store = open_store(store_dir)?;
    let registry = Registry::new(reference.registry(), options)?;
    let progress = Progress::new(!json);
    let (verb, report) = match direction {
        Direction::Push => ("Pushed", registry.push(&store, reference, &progress).await?),
        Direction::Pull => ("Pulled", registry.pull(&store, reference, &progress).await?),
    };
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
    let module = WasmModule::load(&args.module, args.export.as_deref())?;
    let file_name = args
        .module
        .file_name()
        .and_then(|n| n.to_str())
        .context("the module path has no UTF-8 file name")?;
    let module_name = match Path::new(file_name).extension() {
        Some(ext) if ext == "wasm" => file_name.to_string(),
        _ => format!(
            "{}.wasm",
            Path::new(file_name)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("module")
        ),
    };
    let opts = PackOptions {
        module_name,
        adds: args.adds,
        env: args.env,
        args: args.args,
        workdir: args.workdir,
        labels,
        annotations,
        format: args.format,
        compression: args.compression,
        os: args.os,
        created: PackOptions::created_from_env()?,
    };
    let image = image::build(&module, &opts)
        .with_context(|| format!("packing {}", args.module.display()))?;

    let store = open_store(store_dir)?;
    store.put(&args.tag, &image)?;
    if let Some(path) = &args.output {
        wasmbox::archive::write(&store, &args.tag, path)?;
    }
    if let Some(dir) = &args.oci_layout {
        Store::open(dir)?.put(&args.tag, &image)?;
    }
    let os = opts
        .os
        .clone()
        .unwrap_or_else(|| module.default_os().to_string());
    if !args.json {
        println!(
            "Packed {} {} ({}/{}, {})",
            args.tag,
            image.digest(),
            os,
            format::ARCH_WASM,
            module.world
        );
    }
    let mut pushed = None;
    if args.push {
        let registry = Registry::new(args.tag.registry(), &args.registry)?;
        let report = registry
            .push(&store, &args.tag, &Progress::new(!args.json))
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
    if args.json {
        let out = json!({
            "reference": args.tag.to_string(),
            "digest": image.digest(),
            "os": os,
            "architecture": format::ARCH_WASM,
            "wasiWorld": module.world.to_string(),
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

async fn inspect(
    store_dir: Option<&Path>,
    reference: &ImageRef,
    remote: bool,
    options: &RegistryOptions,
) -> Result<ImageInfo> {
    if !remote {
        let store = open_store(store_dir)?;
        if let Some(stored) = store.resolve(reference)? {
            let (manifest, config) = store.manifest_and_config(&stored)?;
            return image::describe(reference.as_str(), &manifest, &config);
        }
    }
    let registry = Registry::new(reference.registry(), options)?;
    let (manifest, _) = registry.fetch_manifest(reference).await?;
    let config_digest = image::parse_manifest(&manifest)?
        .config()
        .digest()
        .to_string();
    let config = registry.fetch_blob(reference, &config_digest).await?;
    image::describe(reference.as_str(), &manifest, &config)
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
        rows.push(image::describe(&stored.name, &manifest, &config)?);
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
