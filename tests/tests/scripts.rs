//! The install script keeps Docker intact: it never asks apt for Debian's
//! containerd or runc where those binaries are already installed.

use std::path::Path;
use std::process::Command;

use wasmbox_tests::docker::workspace_root;

/// `scripts/install-deps.sh --print` with `bin` first on PATH, and a
/// `dpkg-query` there that reports every package as not installed.
fn would_install(bin: &Path) -> Vec<String> {
    let dpkg_query = bin.join("dpkg-query");
    std::fs::write(&dpkg_query, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &dpkg_query,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("bash")
        .arg(workspace_root().join("scripts/install-deps.sh"))
        .arg("--print")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn install_deps_skips_containerd_and_runc_where_they_are_installed() {
    let bin = tempfile::tempdir().unwrap();
    let path = Path::new("/usr/bin:/bin");
    // Only when the binaries are not on this reduced PATH can the script
    // be seen asking for them.
    if !["containerd", "runc"]
        .iter()
        .any(|b| std::env::split_paths(path).any(|d| d.join(b).exists()))
    {
        let wanted = would_install(bin.path());
        assert!(wanted.contains(&"containerd".to_string()), "{wanted:?}");
        assert!(wanted.contains(&"runc".to_string()), "{wanted:?}");
    }
    for binary in ["containerd", "runc"] {
        let fake = bin.path().join(binary);
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let wanted = would_install(bin.path());
    assert!(
        !wanted.iter().any(|p| p == "containerd" || p == "runc"),
        "{wanted:?}"
    );
    // Everything else is still asked for.
    assert!(wanted.contains(&"skopeo".to_string()), "{wanted:?}");
    assert!(
        wanted.contains(&"docker-registry".to_string()),
        "{wanted:?}"
    );
}
