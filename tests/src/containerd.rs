//! A containerd of the test's own, in a temp dir, with the freshly built
//! shim on its PATH; `ctr` against it, and the checks that nothing is left.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{netns, require_tool, spawn_logged, terminate, wait_until, workspace_bin};

/// A containerd with its own root, state and socket in a temp dir: the
/// machine's (`containerd` on PATH) unless [`ContainerdOptions::bin_dir`]
/// names another build.
pub struct Containerd {
    child: Child,
    dir: TempDir,
    /// The gRPC socket (`ctr -a`).
    pub address: PathBuf,
    ctr: PathBuf,
    /// How it was started, to start it again ([`Containerd::restart`]);
    /// `None` for one in a network namespace.
    launch: Option<Launch>,
}

/// How a containerd was started: its binary, config, PATH and extra environment.
struct Launch {
    containerd: PathBuf,
    config: PathBuf,
    path: String,
    env: Vec<(String, String)>,
}

/// How to start a [`Containerd`].
#[derive(Default)]
pub struct ContainerdOptions<'a> {
    /// Where `containerd` and `ctr` are (default: PATH).
    pub bin_dir: Option<PathBuf>,
    /// Top-level config lines (before any table), e.g. `disabled_plugins`.
    pub top_level: String,
    /// CRI settings in the config schema of this containerd
    /// ([`major_version`]): for 1.x, keys of the CRI plugin's table first,
    /// then any sub-tables of it; for 2.x, whole tables.
    pub cri_config: String,
    /// Start it inside this network namespace.
    pub netns: Option<&'a netns::NetNs>,
    /// Extra environment for containerd, which its shims inherit.
    pub env: Vec<(String, String)>,
    /// A whole config to start from (e.g. what `deploy/`'s installer made
    /// of `containerd config default`): the test's settings (paths,
    /// sockets, CRI) are merged into it, everything else stays.
    pub base_config: Option<String>,
}

/// The environment variable naming the directory of the containerd the
/// shim, CRI and Docker suites run on (`containerd`, `ctr` and
/// `containerd-shim-runc-v2`); `make test` runs them again with it set to
/// containerd 2.x (scripts/containerd2.sh).
pub const CONTAINERD_UNDER_TEST: &str = "WASMBOX_TEST_CONTAINERD";

/// The directory [`CONTAINERD_UNDER_TEST`] names, if it is set; `None`
/// means the machine's containerd (PATH).
pub fn containerd_under_test() -> Option<PathBuf> {
    let dir = std::env::var_os(CONTAINERD_UNDER_TEST).filter(|d| !d.is_empty())?;
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("containerd").is_file(),
        "{CONTAINERD_UNDER_TEST}={} holds no containerd",
        dir.display()
    );
    Some(dir)
}

/// The major version of the containerd binary at `containerd` (1 or 2),
/// which decides the shape of its config (version 2 or 3).
pub fn major_version(containerd: &Path) -> u32 {
    let out = Command::new(containerd)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", containerd.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    // "containerd github.com/containerd/containerd/v2 2.1.9+unknown" or
    // "containerd containerd.io 1.6.20 <commit>".
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.trim_start_matches('v').split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("unrecognised containerd --version: {text:?}"))
}

/// The major version of the containerd a node started with `bin_dir` (or
/// [`containerd_under_test`], or PATH) runs.
pub fn major_version_of(bin_dir: Option<&Path>) -> u32 {
    match bin_dir
        .map(Path::to_path_buf)
        .or_else(containerd_under_test)
    {
        Some(dir) => major_version(&dir.join("containerd")),
        None => major_version(Path::new("containerd")),
    }
}

/// `ctr`'s output without the deprecation warnings containerd ≥ 2.2 prints
/// on its stderr (cgroup v1 on these machines), which are not the guest's.
fn without_deprecation_warnings(mut out: Output) -> Output {
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("msg=\"DEPRECATION: ") {
        out.stderr = text
            .lines()
            .filter(|l| !(l.contains("level=warning") && l.contains("msg=\"DEPRECATION: ")))
            .flat_map(|l| [l, "\n"])
            .collect::<String>()
            .into_bytes();
    }
    out
}

/// `base` with every value of `ours` set in it, table by table; `base`
/// keeps its own version. A version-4 config (containerd ≥ 2.4) names its
/// sockets in server plugins, which get the addresses of `ours` too.
fn merge_config(base: &str, ours: &str, sock: &Path) -> String {
    fn merge(into: &mut toml_edit::Table, from: &toml_edit::Table) {
        for (key, item) in from.iter() {
            match (
                into.get_mut(key).and_then(|i| i.as_table_mut()),
                item.as_table(),
            ) {
                (Some(sub), Some(from_sub)) => merge(sub, from_sub),
                _ => {
                    into.insert(key, item.clone());
                }
            }
        }
    }
    let mut doc: toml_edit::DocumentMut = base.parse().expect("the base config is TOML");
    let mut ours: toml_edit::DocumentMut = ours.parse().expect("the test's config is TOML");
    ours.remove("version");
    merge(doc.as_table_mut(), ours.as_table());
    if doc.get("version").and_then(|v| v.as_integer()) >= Some(4) {
        let plugins = doc["plugins"].as_table_mut().expect("a plugins table");
        for (server, address) in [
            ("grpc", sock.display().to_string()),
            ("ttrpc", format!("{}.ttrpc", sock.display())),
            ("debug", format!("{}.debug", sock.display())),
        ] {
            let mut table = toml_edit::Table::new();
            table.insert("address", toml_edit::value(address));
            plugins.insert(&format!("io.containerd.server.v1.{server}"), table.into());
        }
    }
    doc.to_string()
}

/// `containerd --version` of the binary at `containerd`, printed once per
/// test binary so every run says which containerd it tested against.
fn announce_version(containerd: &Path) {
    static ANNOUNCED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut seen = ANNOUNCED.lock().unwrap_or_else(|e| e.into_inner());
    if seen.iter().any(|p| p == containerd) {
        return;
    }
    let version = Command::new(containerd)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    eprintln!("testing against {version} ({})", containerd.display());
    seen.push(containerd.to_path_buf());
}

impl Containerd {
    pub fn start() -> Containerd {
        Containerd::start_with("")
    }

    /// Starts containerd with `cri_config` appended to its config: keys of
    /// the CRI plugin's table first, then any sub-tables of it.
    pub fn start_with(cri_config: &str) -> Containerd {
        Containerd::start_opts(ContainerdOptions {
            cri_config: cri_config.to_string(),
            ..Default::default()
        })
    }

    pub fn start_opts(opts: ContainerdOptions) -> Containerd {
        let bin_dir = opts.bin_dir.clone().or_else(containerd_under_test);
        let (containerd, ctr) = match &bin_dir {
            Some(dir) => (dir.join("containerd"), dir.join("ctr")),
            None => {
                require_tool("containerd");
                require_tool("ctr");
                (PathBuf::from("containerd"), PathBuf::from("ctr"))
            }
        };
        announce_version(&containerd);
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir()
            .expect("temp dir");
        let address = dir.path().join("containerd.sock");
        let config = match major_version(&containerd) {
            1 => format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n{top}\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"{sock}.debug\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n{cri_config}\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                sock = address.display(),
                top = opts.top_level,
                cri_config = opts.cri_config,
            ),
            // containerd 2.x: config version 3, its CRI split into plugins
            // of their own; NRI (on by default) gets a socket of its own, as
            // several of these run at once.
            _ => format!(
                "version = 3\nroot = '{root}'\nstate = '{state}'\n{top}\n[grpc]\n  address = '{sock}'\n[ttrpc]\n  address = '{sock}.ttrpc'\n[debug]\n  address = '{sock}.debug'\n[plugins.'io.containerd.grpc.v1.cri']\n  disable_tcp_service = true\n[plugins.'io.containerd.nri.v1.nri']\n  socket_path = '{nri}'\n{cri_config}\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                sock = address.display(),
                nri = dir.path().join("nri.sock").display(),
                top = opts.top_level,
                cri_config = opts.cri_config,
            ),
        };
        let config = match &opts.base_config {
            Some(base) => merge_config(base, &config, &address),
            None => config,
        };
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let shim = workspace_bin("containerd-shim-wasmtime-v1");
        let mut path = std::env::var("PATH").unwrap_or_default();
        if let Some(bin_dir) = &bin_dir {
            // Its own runc shim comes before the machine's.
            path = format!("{}:{path}", bin_dir.display());
        }
        let path = format!("{}:{path}", shim.parent().unwrap().display());
        // Its shims keep compiled modules and policy verdicts in its temp
        // dir, not the machine's.
        let mut env = vec![
            (
                "WASMBOX_CACHE_DIR".to_string(),
                dir.path().join("module-cache").display().to_string(),
            ),
            (
                "WASMBOX_VERIFIED_DIR".to_string(),
                dir.path().join("verified").display().to_string(),
            ),
        ];
        env.extend(opts.env.iter().cloned());
        let mut cmd = Command::new(&containerd);
        cmd.arg("--config")
            .arg(&config_path)
            .env("PATH", &path)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let launch = match opts.netns {
            Some(netns) => {
                netns.enter(&mut cmd);
                None
            }
            None => Some(Launch {
                containerd: containerd.clone(),
                config: config_path.clone(),
                path,
                env,
            }),
        };
        let child = spawn_logged(cmd, &dir.path().join("containerd.log"));
        let mut containerd = Containerd {
            child,
            dir,
            address,
            ctr,
            launch,
        };
        containerd.wait_ready();
        containerd
    }

    fn wait_ready(&mut self) {
        wait_until(Duration::from_secs(30), "containerd starting", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "containerd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("containerd.log"))
                        .unwrap_or_default()
                );
            }
            let ready = Command::new(&self.ctr)
                .arg("-a")
                .arg(&self.address)
                .arg("version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            ready.then_some(()).ok_or_else(|| self.log())
        })
    }

    /// Stops containerd (SIGTERM: its shims and tasks keep running) and
    /// starts it again on the same state, as a node's upgrade or crash does.
    pub fn restart(&mut self) {
        let Some(Launch {
            containerd,
            config,
            path,
            env,
        }) = &self.launch
        else {
            panic!("restart of a containerd in a network namespace is not supported");
        };
        terminate(&mut self.child, Duration::from_secs(10));
        let mut cmd = Command::new(containerd);
        cmd.arg("--config")
            .arg(config)
            .env("PATH", path)
            .envs(env.iter().map(|(k, v)| (k, v)));
        self.child = spawn_logged(cmd, &self.dir.path().join("containerd-restarted.log"));
        self.wait_ready();
    }

    /// The compiled-module cache its shims use (unless `env` named another).
    pub fn module_cache_dir(&self) -> PathBuf {
        self.dir.path().join("module-cache")
    }

    /// How many descriptors containerd has open.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Runs `ctr -a SOCKET ARGS…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        without_deprecation_warnings(
            self.ctr_command()
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run ctr"),
        )
    }

    /// `ctr -a SOCKET`, to add arguments to and spawn (`ctr events`).
    pub fn ctr_command(&self) -> Command {
        let mut command = Command::new(&self.ctr);
        command.arg("-a").arg(&self.address);
        command
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr` with `input` on stdin (what `echo … | ctr run` does).
    pub fn ctr_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(&self.ctr)
            .arg("-a")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for ctr");
        let _ = writer.join();
        without_deprecation_warnings(out)
    }

    /// Imports an image archive (`wasmbox pack -o`).
    pub fn import(&self, archive: &Path) {
        let out = self.ctr(&["image", "import", archive.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "ctr image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// containerd's state directory (`state` in its config).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The bundle directory containerd gives the shim for container `id`.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default")
            .join(id)
    }

    /// The pids of the shim processes this containerd started.
    pub fn shim_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep")
            .args([
                "-f",
                &format!(
                    "containerd-shim-wasmtime-v1 .*-address {}",
                    self.address.display()
                ),
            ])
            .output()
            .expect("run pgrep");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Asserts that nothing is left of any container: no container record,
    /// no shim process for this containerd, no mount and no task state dir.
    /// Waits a little, because shims exit just after `ctr run --rm` returns.
    pub fn assert_clean(&self) {
        self.assert_clean_in("default");
    }

    /// [`Containerd::assert_clean`] for containerd namespace `namespace`
    /// (`k8s.io` for the CRI's containers).
    pub fn assert_clean_in(&self, namespace: &str) {
        wait_until(
            Duration::from_secs(10),
            "nothing left of any container",
            || {
                let containers = String::from_utf8(
                    self.ctr(&["-n", namespace, "containers", "ls", "-q"])
                        .stdout,
                )
                .unwrap();
                let shims = self.shim_pids();
                let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(&*self.dir.path().to_string_lossy()))
                    .map(str::to_string)
                    .collect();
                let runc_state: Vec<_> =
                    std::fs::read_dir(self.dir.path().join("state/wasmtime-runc").join(namespace))
                        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                        .unwrap_or_default();
                let task_dirs: Vec<_> = std::fs::read_dir(
                    self.dir
                        .path()
                        .join("state/io.containerd.runtime.v2.task")
                        .join(namespace),
                )
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
                if containers.trim().is_empty()
                    && shims.is_empty()
                    && mounts.is_empty()
                    && task_dirs.is_empty()
                    && runc_state.is_empty()
                {
                    return Ok(());
                }
                Err(format!(
                    "left behind: containers {containers:?}, shim pids {shims:?}, mounts {mounts:?}, task dirs {task_dirs:?}, runc containers {runc_state:?}"
                ))
            },
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}
