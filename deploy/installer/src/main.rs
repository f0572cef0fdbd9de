//! `wasmbox-node-installer`: run by the node-installer DaemonSet (see
//! `deploy/kubernetes/node-installer.yaml`) to install the wasmtime shim on
//! a node, register the `wasmtime` handler with containerd, restart
//! containerd when that changed anything, and label the node.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use wasmbox_node_installer::{
    DEFAULT_HANDLER, DEFAULT_RUNTIME_TYPE, NODE_LABEL, NODE_LABEL_VALUE, RuntimeOptions,
    add_runtime, config_text_version, install_file, node_label_request, parse_containerd_major,
    read_optional, write_config_atomically,
};

const DEFAULT_RESTART: &str =
    "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd";
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Parser)]
#[command(
    version,
    about = "Installs the wasmtime containerd shim on a node and registers its runtime handler."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the shim into the host, add the runtime handler to
    /// containerd's config, restart containerd if anything changed and
    /// optionally label the node.
    Install(InstallArgs),
    /// Print a containerd config with the runtime handler added, for
    /// operators who manage the config themselves.
    Config(ConfigArgs),
    /// Block until SIGTERM or SIGINT (the DaemonSet's main container, which
    /// keeps the pod Ready after the install init container).
    Sleep,
}

#[derive(Clone, Copy, ValueEnum)]
enum Major {
    /// Ask the host's containerd binary, else go by the config's version.
    Auto,
    #[value(name = "1")]
    One,
    #[value(name = "2")]
    Two,
}

#[derive(Parser)]
struct InstallArgs {
    /// Where the host's root filesystem is mounted.
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// The shim binary to install (in this container's filesystem).
    #[arg(long, default_value = "/opt/wasmbox/containerd-shim-wasmtime-v1")]
    shim: PathBuf,
    /// containerd's config file, as a path on the host.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    config: PathBuf,
    /// Directory on the host, on containerd's PATH, to install the shim into.
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Shell command that restarts the host's containerd.
    #[arg(long, default_value = DEFAULT_RESTART)]
    restart_command: String,
    /// Do not restart containerd even if something changed.
    #[arg(long)]
    no_restart: bool,
    /// Label the node NODE_NAME through the API server (in-cluster service account).
    #[arg(long)]
    label_node: bool,
    /// The label to set, as key=value.
    #[arg(long, default_value_t = format!("{NODE_LABEL}={NODE_LABEL_VALUE}"))]
    label: String,
}

#[derive(Parser)]
struct ConfigArgs {
    /// The containerd config file (a missing file counts as empty).
    #[arg(long)]
    config: PathBuf,
    /// Print nothing; exit 1 if the config needs the change, 0 if not
    /// (2 on errors).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The runtime to add, shared by `install` and `config`.
#[derive(clap::Args)]
struct RuntimeArgs {
    /// containerd major version, for a config written from scratch (auto:
    /// `install` asks the host's containerd binary; else the config's
    /// version key decides).
    #[arg(long, value_enum, default_value = "auto")]
    containerd_major: Major,
    /// Runtime handler name (the RuntimeClass's handler).
    #[arg(long, default_value = DEFAULT_HANDLER)]
    handler: String,
    /// containerd runtime_type of the handler.
    #[arg(long, default_value = DEFAULT_RUNTIME_TYPE)]
    runtime_type: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Install(args) => install(&args).map(|()| ExitCode::SUCCESS),
        Cmd::Config(args) => config(&args),
        Cmd::Sleep => sleep().map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        // 2, not 1, so that `config --check` can tell "needs a change" (1)
        // from "could not tell".
        ExitCode::from(2)
    })
}

/// `path` (absolute, on the host) under the host root mount.
fn on_host(host_root: &Path, path: &Path) -> PathBuf {
    host_root.join(path.strip_prefix("/").unwrap_or(path))
}

fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_optional(path)?).map_err(|_| {
        anyhow!(
            "containerd config {} is not UTF-8 text; it was left unchanged",
            path.display()
        )
    })
}

fn install(args: &InstallArgs) -> Result<()> {
    let shim_name = args
        .shim
        .file_name()
        .ok_or_else(|| anyhow!("--shim {} does not name a file", args.shim.display()))?;
    let shim_dest = on_host(&args.host_root, &args.bin_dir).join(shim_name);
    let config_path = on_host(&args.host_root, &args.config);
    // Set before anything is written and cleared after a successful
    // restart, so a failed restart is retried by the next run even though
    // the files are already up to date.
    let pending = pending_marker(&config_path);

    let mark_pending = || -> Result<()> {
        if !args.no_restart && !pending.exists() {
            std::fs::write(&pending, b"")
                .with_context(|| format!("could not create {}", pending.display()))?;
        }
        Ok(())
    };

    let text = read_text(&config_path)?;
    let major = match args.runtime.containerd_major {
        Major::One => 1,
        Major::Two => 2,
        Major::Auto => detect_major(&args.host_root, &text),
    };
    let opts = RuntimeOptions {
        handler: args.runtime.handler.clone(),
        runtime_type: args.runtime.runtime_type.clone(),
        containerd_major: major,
        path: config_path.clone(),
    };
    // The config is checked before anything is installed, so a config we
    // cannot edit leaves the node exactly as it was.
    let edit = add_runtime(&text, &opts)?;

    let shim_changed = install_file(&args.shim, &shim_dest)?;
    if shim_changed {
        mark_pending()?;
        println!("installed shim {}", shim_dest.display());
    } else {
        println!("shim {} already up to date", shim_dest.display());
    }

    if edit.changed {
        mark_pending()?;
        write_config_atomically(&config_path, &edit.text)?;
        println!(
            "added runtime handler {} to {}",
            args.runtime.handler,
            config_path.display()
        );
    } else {
        println!(
            "runtime handler {} already in {}",
            args.runtime.handler,
            config_path.display()
        );
    }

    if args.no_restart {
        if shim_changed || edit.changed {
            println!("not restarting containerd (--no-restart)");
        }
    } else if pending.exists() {
        restart(&args.restart_command)?;
        std::fs::remove_file(&pending)
            .with_context(|| format!("could not remove {}", pending.display()))?;
        println!("restarted containerd");
    } else {
        println!("nothing changed; containerd not restarted");
    }

    if args.label_node {
        label_node(&args.label)?;
    }
    Ok(())
}

fn pending_marker(config_path: &Path) -> PathBuf {
    let mut name = config_path.as_os_str().to_owned();
    name.push(".wasmbox-restart-pending");
    PathBuf::from(name)
}

/// The host's containerd major version: from its `--version` if the host
/// binary runs here, else from the config schema (version 3 means
/// containerd 2), else 1.
fn detect_major(host_root: &Path, config: &str) -> u32 {
    for bin in ["usr/bin/containerd", "usr/local/bin/containerd"] {
        let output = Command::new(host_root.join(bin)).arg("--version").output();
        if let Ok(out) = output
            && out.status.success()
            && let Some(major) = parse_containerd_major(&String::from_utf8_lossy(&out.stdout))
        {
            return major;
        }
    }
    major_from_config(config)
}

/// containerd 2 writes `version = 3`; anything else is taken as containerd 1.
fn major_from_config(config: &str) -> u32 {
    match config_text_version(config) {
        Some(3) => 2,
        _ => 1,
    }
}

fn restart(command: &str) -> Result<()> {
    println!("running: {command}");
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .status()
        .with_context(|| format!("could not run the restart command `{command}`"))?;
    if !status.success() {
        bail!(
            "the restart command `{command}` failed ({status}); containerd will be restarted on the next run"
        );
    }
    Ok(())
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| anyhow!("--label-node needs the environment variable {name}"))
}

fn label_node(label: &str) -> Result<()> {
    let (key, value) = label
        .split_once('=')
        .ok_or_else(|| anyhow!("--label {label} is not of the form key=value"))?;
    let node = env("NODE_NAME")?;
    let token_path = Path::new(SERVICE_ACCOUNT_DIR).join("token");
    let ca_path = Path::new(SERVICE_ACCOUNT_DIR).join("ca.crt");
    let token = std::fs::read_to_string(&token_path).with_context(|| {
        format!(
            "could not read the service account token {}",
            token_path.display()
        )
    })?;
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("could not read the cluster CA {}", ca_path.display()))?;
    let request = node_label_request(
        &env("KUBERNETES_SERVICE_HOST")?,
        &env("KUBERNETES_SERVICE_PORT")?,
        &node,
        &token,
        key,
        value,
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the HTTP runtime")?;
    runtime.block_on(async {
        let ca = reqwest::Certificate::from_pem(&ca)
            .with_context(|| format!("{} is not a PEM certificate", ca_path.display()))?;
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("could not set up the HTTPS client")?;
        let mut builder = client.patch(&request.url).body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("could not reach the API server at {}", request.url))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let reason = body
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect::<String>();
            bail!("labelling node {node} failed: API server answered {status}: {reason}");
        }
        println!("labelled node {node} with {key}={value}");
        Ok(())
    })
}

fn config(args: &ConfigArgs) -> Result<ExitCode> {
    let text = read_text(&args.config)?;
    let opts = RuntimeOptions {
        handler: args.runtime.handler.clone(),
        runtime_type: args.runtime.runtime_type.clone(),
        containerd_major: match args.runtime.containerd_major {
            Major::One => 1,
            Major::Two => 2,
            Major::Auto => major_from_config(&text),
        },
        path: args.config.clone(),
    };
    let edit = add_runtime(&text, &opts)?;
    if args.check {
        if edit.changed {
            eprintln!(
                "{} needs the runtime handler {}",
                args.config.display(),
                args.runtime.handler
            );
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", edit.text);
    Ok(ExitCode::SUCCESS)
}

fn sleep() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("could not install signal handlers")?;
    if let Some(signal) = signals.forever().next() {
        println!("received signal {signal}, exiting");
    }
    Ok(())
}
