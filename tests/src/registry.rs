//! Debian's `docker-registry` (the CNCF distribution registry) in a temp dir:
//! open, Basic (htpasswd), Bearer (a [`TokenServer`]), TLS, or read-only.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use crate::token_server::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};
use crate::{free_port, http_status, netns, require_tool, spawn_logged, wait_until};

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
pub(crate) fn self_signed(dir: &Path, key: &str, pem: &str, subject: &str) {
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
        let what = format!("docker-registry answering on {}", self.addr);
        wait_until(Duration::from_secs(20), &what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            let up = if self.tls {
                TcpStream::connect(&self.addr).is_ok()
            } else {
                http_status(&self.addr, "/v2/").is_some()
            };
            up.then_some(()).ok_or_else(|| self.log())
        })
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
