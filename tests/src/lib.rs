//! The test harness: starts real parts (the CNCF distribution registry now,
//! containerd later) in temp dirs on loopback, and runs the freshly built
//! `wasmbox` against them. Everything started here stops and is cleaned up on
//! `Drop`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Fails the test with an install hint when a system tool is missing: tests
/// never skip silently, because a skipped check proves nothing in CI.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; run `make deps` (it installs the Debian packages the tests use)"
    );
}

/// Path of a binary built from this workspace (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// Starts a daemon with stdin closed and stdout+stderr going to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("create the daemon log");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup the log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// How a test registry checks clients.
pub enum RegistryAuth {
    None,
    /// htpasswd (bcrypt) Basic auth with one user.
    Basic {
        user: String,
        password: String,
    },
    /// The registry's `token` auth: clients get a signed JWT from a
    /// [`TokenServer`] that knows one user.
    Bearer {
        user: String,
        password: String,
    },
    /// No auth, but HTTPS with a certificate from a test CA (see [`Registry::ca_file`]).
    Tls,
    /// No auth, storage in read-only maintenance mode: every upload is refused.
    ReadOnly,
}

/// Makes a self-signed RSA certificate `pem` with key `key` in `dir`.
fn self_signed(dir: &Path, key: &str, pem: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem, "-days",
            "2", "-subj", subject,
        ],
    );
}

/// Runs `openssl` with `args` in `dir`, failing the test on error.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    require_tool("openssl");
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Debian's `docker-registry` (the CNCF distribution registry) in a temp dir.
pub struct Registry {
    child: Child,
    dir: TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
    tls: bool,
    _token_server: Option<TokenServer>,
}

impl Registry {
    pub fn start(auth: RegistryAuth) -> Registry {
        Registry::start_in(auth, None)
    }

    /// A registry listening on loopback inside `netns` (for a daemon that
    /// runs there), or on the machine's loopback with `None`.
    pub fn start_in(auth: RegistryAuth, netns: Option<&netns::NetNs>) -> Registry {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut token_server = None;
        let mut tls = false;
        if let RegistryAuth::Bearer { user, password } = &auth {
            let server = TokenServer::start(dir.path(), user, password);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.addr,
                dir.path().join("token.pem").display()
            ));
            token_server = Some(server);
        }
        if let RegistryAuth::Tls = &auth {
            let d = dir.path();
            self_signed(d, "ca.key", "ca.pem", "/CN=wasmbox test CA");
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            );
            std::fs::write(
                d.join("san.ext"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display()
            ));
            tls = true;
        }
        if let RegistryAuth::ReadOnly = &auth {
            config = config.replace(
                "storage:\n",
                "storage:\n  maintenance:\n    readonly:\n      enabled: true\n",
            );
        }
        if let RegistryAuth::Basic { user, password } = &auth {
            require_tool("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmbox-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path);
        if let Some(netns) = netns {
            netns.enter(&mut cmd);
        }
        let child = spawn_logged(cmd, &dir.path().join("registry.log"));
        let mut registry = Registry {
            child,
            dir,
            addr,
            tls,
            _token_server: token_server,
        };
        match netns {
            Some(netns) => netns.run(|| registry.wait_ready()),
            None => registry.wait_ready(),
        }
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            let up = if self.tls {
                TcpStream::connect(&self.addr).is_ok()
            } else {
                http_status(&self.addr, "/v2/").is_some()
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not answer on {} within 20 s: {}",
            self.addr,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The CA certificate that signed a [`RegistryAuth::Tls`] registry's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `ADDR/NAME` for a repository on this registry.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN_SERVICE: &str = "wasmbox-test-registry";
const TOKEN_ISSUER: &str = "wasmbox-test-issuer";

/// A minimal Docker token server (the `realm` of the registry's token auth):
/// checks Basic credentials and answers with a JWT signed (RS256, via the
/// openssl CLI) by a key whose certificate is the registry's `rootcertbundle`.
pub struct TokenServer {
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        self_signed(dir, "token.key", "token.pem", "/CN=wasmbox token signer");
        let der = openssl(dir, &["x509", "-in", "token.pem", "-outform", "DER"]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            b64(format!("{user}:{password}").as_bytes(), false)
        );
        let dir = dir.to_path_buf();
        let x5c = b64(&der, false);
        let stop_flag = stop.clone();
        let user = user.to_string();
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer_token_request(stream, &expected, &user, &dir, &x5c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer_token_request(
    mut stream: TcpStream,
    expected_auth: &str,
    user: &str,
    dir: &Path,
    x5c: &str,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let authorized = request.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected_auth
    });
    if !authorized {
        let body = r#"{"details":"wrong username or password"}"#;
        return write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(scope) = pair.strip_prefix("scope=") {
            let scope = percent_decode(scope);
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            if parts.len() == 3 {
                let actions: Vec<&str> = parts[2].split(',').collect();
                access.push(
                    serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}),
                );
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), true),
        b64(claims.to_string().as_bytes(), true)
    );
    let input_file = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(input_file.path(), &signing_input)?;
    let signature = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "token.key",
            input_file.path().to_str().unwrap(),
        ],
    );
    let token = format!("{signing_input}.{}", b64(&signature, true));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64, or unpadded base64url for JWTs.
fn b64(data: &[u8], url: bool) -> String {
    use base64::Engine as _;
    if url {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    } else {
        base64::engine::general_purpose::STANDARD.encode(data)
    }
}

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
    /// Keys of the CRI plugin's table first, then any sub-tables of it.
    pub cri_config: String,
    /// Start it inside this network namespace.
    pub netns: Option<&'a netns::NetNs>,
    /// Extra environment for containerd, which its shims inherit.
    pub env: Vec<(String, String)>,
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
        let (containerd, ctr) = match &opts.bin_dir {
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
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n{top}\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"{sock}.debug\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n{cri_config}\n",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            sock = address.display(),
            top = opts.top_level,
            cri_config = opts.cri_config,
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let shim = workspace_bin("containerd-shim-wasmtime-v1");
        let mut path = std::env::var("PATH").unwrap_or_default();
        if let Some(bin_dir) = &opts.bin_dir {
            // Its own runc shim comes before the machine's.
            path = format!("{}:{path}", bin_dir.display());
        }
        let path = format!("{}:{path}", shim.parent().unwrap().display());
        // Its shims keep compiled modules in its temp dir, not the machine's.
        let mut env = vec![(
            "WASMBOX_CACHE_DIR".to_string(),
            dir.path().join("module-cache").display().to_string(),
        )];
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
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
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
        Command::new(&self.ctr)
            .arg("-a")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
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
        out
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

    /// The bundle directory containerd gives the shim for container `id`.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default")
            .join(id)
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let containers = String::from_utf8(
                self.ctr(&["-n", namespace, "containers", "ls", "-q"])
                    .stdout,
            )
            .unwrap();
            let shims = Command::new("pgrep")
                .args([
                    "-f",
                    &format!(
                        "containerd-shim-wasmtime-v1 .*-address {}",
                        self.address.display()
                    ),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&*self.dir.path().to_string_lossy()))
                .map(str::to_string)
                .collect();
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
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: containers {containers:?}, shim pids {shims:?}, mounts {mounts:?}, task dirs {task_dirs:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// SIGTERM to a daemon we started, then SIGKILL if it has not exited within
/// `grace`; reaps it either way.
fn terminate(child: &mut Child, grace: Duration) {
    // SAFETY: `kill(2)` on the pid of a child we spawned and have not yet
    // reaped; the pid cannot have been reused before our `wait` below.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The status code of a plain-HTTP GET, or None when nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The `wasmbox` CLI with its own empty store and Docker config dir.
pub struct Wasmbox {
    bin: PathBuf,
    home: TempDir,
}

impl Default for Wasmbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Wasmbox {
    pub fn new() -> Wasmbox {
        Wasmbox {
            bin: workspace_bin("wasmbox"),
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.home.path().join("store")
    }

    pub fn docker_config_dir(&self) -> PathBuf {
        self.home.path().join("docker")
    }

    /// A scratch directory that lives as long as this value.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// A command with this instance's store and Docker config, and nothing
    /// inherited that could change its behaviour.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("WASMBOX_STORE", self.store_dir())
            .env("WASMBOX_CACHE_DIR", self.dir().join("module-cache"))
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env("HOME", self.home.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run wasmbox")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wasmbox {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and asserts a failure exit; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "wasmbox {args:?} should have failed:\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "wasmbox {args:?} panicked: {stderr}"
        );
        stderr
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wasmbox");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("wait for wasmbox")
    }

    /// `login ADDR -u USER --password-stdin --plain-http` with `password` on stdin.
    pub fn login(&self, addr: &str, user: &str, password: &str) -> Output {
        self.run_with_stdin(
            &[
                "login",
                addr,
                "-u",
                user,
                "--password-stdin",
                "--plain-http",
            ],
            &format!("{password}\n"),
        )
    }

    /// `inspect --json` parsed.
    pub fn inspect(&self, reference: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["inspect", reference, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).expect("inspect --json prints JSON")
    }

    /// Names of the images in the local store.
    pub fn images(&self) -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_str(&self.ok(&["images", "--json"])).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["reference"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Guest programs for tests, written in WAT.
pub mod containerd_api;

/// tests/guests/probe.c (the C guest whose argv[1] picks what it does),
/// compiled once per test binary.
pub fn probe() -> &'static Path {
    static PROBE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        let out = guest_dir().join("probe.wasm");
        compile_c(include_str!("../guests/probe.c"), &out);
        out
    })
}

/// The probe as a `wasi:cli` component (through the WASI preview 1 adapter),
/// so that its file calls reach the guest as WASI 0.2's.
pub fn probe_component() -> &'static Path {
    static COMPONENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COMPONENT.get_or_init(|| {
        use wasi_preview1_component_adapter_provider as adapter;
        let module = std::fs::read(probe()).unwrap();
        let component = wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)
            .and_then(|e| {
                e.adapter(
                    adapter::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                    adapter::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
                )
            })
            .and_then(|mut e| e.encode())
            .unwrap_or_else(|e| panic!("making the probe a component: {e:#}"));
        let out = guest_dir().join("probe-component.wasm");
        std::fs::write(&out, component).unwrap();
        out
    })
}
pub mod cri;
pub mod docker;
pub mod netns;

/// Where this test binary keeps the guests it builds.
fn guest_dir() -> PathBuf {
    let dir = workspace_bin("wasmbox")
        .parent()
        .unwrap()
        .join(format!("test-guests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// examples/http-hello (a `wasi:http` handler: WAT core module + WIT world)
/// made into a component with `wit-component`, once per test binary.
pub fn http_hello() -> &'static Path {
    static COMPONENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COMPONENT.get_or_init(|| {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/http-hello");
        let out = guest_dir().join("http-hello.wasm");
        std::fs::write(&out, component_from_wat(&example, "hello")).unwrap();
        out
    })
}

/// tests/guests/lookup: a `wasi:cli` component that exits 0 when
/// `only-in-container.test` resolves to 10.1.2.77 (WASI 0.2.12 WIT from
/// examples/http-hello).
pub fn lookup_component() -> &'static Path {
    static COMPONENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COMPONENT.get_or_init(|| guest_component("lookup"))
}

/// tests/guests/sockets: a `wasi:cli` component that creates TCP sockets
/// until that fails, and exits 0 when it failed with `new-socket-limit`.
pub fn sockets_component() -> &'static Path {
    static COMPONENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COMPONENT.get_or_init(|| guest_component("sockets"))
}

/// tests/guests/NAME (NAME.wat and the world NAME in wit/world.wit, with the
/// WASI 0.2.12 WIT of examples/http-hello) made into a component.
fn guest_component(name: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = guest_dir().join(name);
    std::fs::create_dir_all(dir.join("wit/deps")).unwrap();
    let wat = format!("{name}.wat");
    std::fs::copy(here.join("guests").join(name).join(&wat), dir.join(&wat)).unwrap();
    std::fs::copy(
        here.join("guests").join(name).join("wit/world.wit"),
        dir.join("wit/world.wit"),
    )
    .unwrap();
    let deps = here.join("../examples/http-hello/wit/deps");
    for entry in std::fs::read_dir(&deps).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("wit/deps").join(entry.file_name())).unwrap();
    }
    let out = guest_dir().join(format!("{name}.wasm"));
    std::fs::write(&out, component_from_wat(&dir, name)).unwrap();
    out
}

/// Builds the component of world `world` in `dir/wit` from the core module
/// `dir/WORLD.wat`, as `wasm-tools component new` would.
pub fn component_from_wat(dir: &Path, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(dir.join("wit"))
        .unwrap_or_else(|e| panic!("WIT in {}: {e:#}", dir.display()));
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("the world");
    let mut module = wat::parse_file(dir.join(format!("{}.wat", resolve.worlds[world].name)))
        .expect("the core module's WAT");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embedding the WIT world");
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut e| e.encode())
        .unwrap_or_else(|e| panic!("making the component from {}: {e:#}", dir.display()))
}

pub mod guests {
    /// A WASI preview 1 command that prints `hello from wasm`.
    pub const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))))"#;

    /// A core module with no `_start`: a library exporting `add`.
    pub const LIBRARY_WAT: &str = r#"(module
  (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;

    /// A component exporting `wasi:cli/run@0.2.0`.
    pub const CLI_COMPONENT_WAT: &str = r#"(component
  (core module $m (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $inst)))"#;

    /// A component exporting an instance named `wasi:http/incoming-handler@0.2.0`.
    pub const HTTP_COMPONENT_WAT: &str = r#"(component
  (core module $m (func (export "handle")))
  (core instance $i (instantiate $m))
  (func $handle (canon lift (core func $i "handle")))
  (instance $inst (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $inst)))"#;

    /// A module whose data segment makes it about `megabytes` MB, for size tests
    /// and benchmarks; the data is pseudo-random so it compresses like code.
    pub fn big_module(megabytes: usize) -> Vec<u8> {
        let mut data = vec![0u8; megabytes << 20];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for (i, b) in data.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half random, half repetitive: roughly the ratio of real modules.
            *b = if i % 4096 < 2048 {
                x as u8
            } else {
                (i % 251) as u8
            };
        }
        let pages = data.len().div_ceil(65536) as u32 + 1;
        let mut m = wasm_encoder::Module::new();
        let mut types = wasm_encoder::TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = wasm_encoder::FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut mems = wasm_encoder::MemorySection::new();
        mems.memory(wasm_encoder::MemoryType {
            minimum: pages as u64,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mems);
        let mut exports = wasm_encoder::ExportSection::new();
        exports.export("_start", wasm_encoder::ExportKind::Func, 0);
        m.section(&exports);
        let mut code = wasm_encoder::CodeSection::new();
        let mut f = wasm_encoder::Function::new([]);
        f.instruction(&wasm_encoder::Instruction::End);
        code.function(&f);
        m.section(&code);
        let mut datas = wasm_encoder::DataSection::new();
        datas.active(0, &wasm_encoder::ConstExpr::i32_const(0), data);
        m.section(&datas);
        m.finish()
    }
}

/// Compiles WASI C with Debian's clang (`clang --target=wasm32-wasi`).
pub fn compile_c(source: &str, out: &Path) {
    require_tool("clang");
    let dir = out.parent().unwrap();
    let src = dir.join(format!("{}.c", out.file_stem().unwrap().to_string_lossy()));
    std::fs::write(&src, source).unwrap();
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("run clang");
    assert!(
        status.success(),
        "clang --target=wasm32-wasi failed; are wasi-libc and libclang-rt-14-dev-wasm32 installed?"
    );
}
