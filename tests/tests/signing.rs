//! Signing and verification with the real tools on a local registry
//! (distribution 2.8: no referrers API, so the `sha256-<hex>` tag schema):
//! wasmbox signs what cosign verifies and verifies what cosign signs, in
//! both of cosign's forms; containers/image `policy.json` scopes decide as
//! skopeo's engine does; the shim refuses at create, through ctr, what the
//! policy does not accept, and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Output;

use wasmbox_tests::signing::Cosign;
use wasmbox_tests::{Containerd, ContainerdOptions, Registry, RegistryAuth, Wasmbox, guests};

const RUNTIME: &str = "io.containerd.wasmtime.v1";
const PASSWORD: &str = "correct horse";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The hello module printing `text` (up to 15 bytes, padded) instead, so
/// each image has a digest of its own.
fn variant(text: &str) -> String {
    let padded = format!("{text:<15.15}");
    guests::HELLO_WAT.replace("hello from wasm", &padded)
}

/// `wasmbox generate-key` into `dir`, sealed with [`PASSWORD`]: `(key, public key)`.
fn generate_key(w: &Wasmbox, dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let prefix = dir.join("wasmbox");
    let out = w
        .command()
        .args([
            "generate-key",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ])
        .env("WASMBOX_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (dir.join("wasmbox.key"), dir.join("wasmbox.pub"))
}

/// `wasmbox sign IMAGE --key KEY --format FORMAT` with [`PASSWORD`].
fn sign(w: &Wasmbox, key: &Path, image: &str, format: &str) -> Output {
    w.command()
        .args([
            "sign",
            image,
            "--key",
            key.to_str().unwrap(),
            "--plain-http",
            "--format",
            format,
        ])
        .env("WASMBOX_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

/// Writes a policy at `path` that takes, by default, a cosign signature by
/// `public` (matchRepository, as cosign's identities need); returns `path`.
fn signed_by_policy(path: &Path, public: &Path) -> PathBuf {
    std::fs::write(
        path,
        format!(
            r#"{{"default":[{{"type":"sigstoreSigned","keyPath":"{}","signedIdentity":{{"type":"matchRepository"}}}}]}}"#,
            public.display()
        ),
    )
    .unwrap();
    path.to_path_buf()
}

/// A registry, the wasmbox CLI and a scratch directory.
struct Bench {
    registry: Registry,
    w: Wasmbox,
    hello: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let w = Wasmbox::new();
        let hello = w.dir().join("hello.wat");
        std::fs::write(&hello, guests::HELLO_WAT).unwrap();
        Bench {
            registry: Registry::start(RegistryAuth::None),
            w,
            hello,
        }
    }

    /// Packs and pushes `module` as `name`; returns `(reference, reference@digest)`.
    fn push(&self, name: &str, module: &Path) -> (String, String) {
        let image = self.registry.image(name);
        let out = self.w.ok(&[
            "pack",
            module.to_str().unwrap(),
            "-t",
            &image,
            "--push",
            "--plain-http",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let digest = v["digest"].as_str().unwrap().to_string();
        let repo = image.rsplit_once(':').unwrap().0.to_string();
        (image, format!("{repo}@{digest}"))
    }

    /// A module that prints `text` (so each image has its own digest).
    fn module(&self, text: &str) -> PathBuf {
        let path = self.w.dir().join(format!("{text}.wat"));
        std::fs::write(&path, variant(text)).unwrap();
        path
    }

    fn generate_key(&self, dir: &Path) -> (PathBuf, PathBuf) {
        generate_key(&self.w, dir)
    }

    fn sign(&self, key: &Path, image: &str, format: &str) -> Output {
        sign(&self.w, key, image, format)
    }

    /// `wasmbox verify` that must fail; its stderr.
    fn refused(&self, image: &str, how: &[&str]) -> String {
        let mut args = vec!["verify", image, "--plain-http"];
        args.extend_from_slice(how);
        self.w.fails(&args)
    }

    fn verify(&self, image: &str, how: &[&str]) -> Output {
        let mut args = vec!["verify", image, "--plain-http"];
        args.extend_from_slice(how);
        self.w.run(&args)
    }
}

#[test]
fn cosign_verifies_what_wasmbox_signs_in_both_forms() {
    let b = Bench::new();
    let (key, public) = b.generate_key(&b.w.dir().join("keys"));
    let cosign = Cosign::new(&b.w.dir().join("cosign-home"));
    let (_, other_public) = cosign.generate_key_pair("");
    for form in ["bundle", "legacy", "both"] {
        let (image, _) = b.push(&format!("signed-{form}:v1"), &b.module(form));
        let out = b.sign(&key, &image, form);
        assert!(
            out.status.success(),
            "wasmbox sign --format {form}: {}",
            stderr(&out)
        );
        let out = cosign.verify(&public, &image);
        assert!(
            out.status.success(),
            "cosign verify of wasmbox's {form} signature: {}",
            stderr(&out)
        );
        // The same check fails with a key that did not sign.
        let out = cosign.verify(&other_public, &image);
        assert!(
            !out.status.success(),
            "cosign verify with another key passed ({form})"
        );
    }
    // An unsigned image: cosign finds nothing.
    let (image, _) = b.push("unsigned:v1", &b.module("unsigned"));
    assert!(!cosign.verify(&public, &image).status.success());
}

#[test]
fn wasmbox_verifies_what_cosign_signs_in_both_forms_and_signs_with_cosigns_key() {
    let b = Bench::new();
    let cosign = Cosign::new(&b.w.dir().join("cosign-home"));
    let (key, public) = cosign.generate_key_pair(PASSWORD);
    let (_, bundle_at) = b.push("cosign-bundle:v1", &b.module("bundle"));
    cosign.sign_bundle(&key, PASSWORD, &bundle_at);
    let (_, legacy_at) = b.push("cosign-legacy:v1", &b.module("legacy"));
    cosign.sign_legacy(&key, PASSWORD, &legacy_at);
    for (image, form) in [
        (&bundle_at, "cosign bundle"),
        (&legacy_at, "cosign .sig tag"),
    ] {
        let out = b.verify(image, &["--key", public.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "wasmbox verify {image}: {}",
            stderr(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("accepted: {form} by key")),
            "{stdout}"
        );
    }
    // Another key: refused, in one sentence naming the image and why.
    let (_, other_public) = b.generate_key(&b.w.dir().join("other"));
    let err = b.refused(&bundle_at, &["--key", other_public.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "image {bundle_at} is not signed by a key that the policy for"
        )),
        "{err}"
    );
    assert!(
        err.contains("none of its 1 signature verifies with the policy's key"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // An unsigned image.
    let (unsigned, _) = b.push("unsigned:v1", &b.module("unsigned"));
    let err = b.refused(&unsigned, &["--key", public.to_str().unwrap()]);
    assert!(err.contains("it has no cosign signature"), "{err}");
    // wasmbox opens cosign's sealed key (COSIGN_PASSWORD works too) and
    // its signature joins cosign's in the `.sig` tag, both verifying.
    let out =
        b.w.command()
            .args([
                "sign",
                &legacy_at,
                "--key",
                key.to_str().unwrap(),
                "--plain-http",
            ])
            .env("COSIGN_PASSWORD", PASSWORD)
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cosign.verify(&public, &legacy_at);
    assert!(out.status.success(), "{}", stderr(&out));
    // The `.sig` tag now holds cosign's payload and wasmbox's, both signed.
    let tag = format!(
        "{}/cosign-legacy:{}",
        b.registry.addr,
        legacy_at.rsplit_once('@').unwrap().1.replacen(':', "-", 1) + ".sig"
    );
    let manifest = b.w.inspect(&tag, &["--remote", "--plain-http"]);
    assert_eq!(
        manifest["layers"].as_array().map(Vec::len),
        Some(2),
        "{manifest}"
    );
}

#[test]
fn keys_and_passwords_that_cannot_be_used_are_refused_in_one_sentence() {
    let b = Bench::new();
    let (key, public) = b.generate_key(&b.w.dir().join("keys"));
    let (image, _) = b.push("app:v1", &b.hello);
    // A wrong password: nothing is pushed.
    let out =
        b.w.command()
            .args([
                "sign",
                &image,
                "--key",
                key.to_str().unwrap(),
                "--plain-http",
            ])
            .env("WASMBOX_PASSWORD", "wrong")
            .output()
            .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("cannot be opened with this password"), "{err}");
    let err = b.refused(&image, &["--key", public.to_str().unwrap()]);
    assert!(
        err.contains("it has no cosign signature"),
        "the failed sign left a signature: {err}"
    );
    // A public key that is not P-256 (Ed25519), and a file that is no key.
    let ed = b.w.dir().join("ed25519.pub");
    std::fs::write(
        &ed,
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let err = b.refused(&image, &["--key", ed.to_str().unwrap()]);
    assert!(err.contains("is not an ECDSA P-256 public key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = b.refused(&image, &["--key", b.hello.to_str().unwrap()]);
    assert!(err.contains("is not a PEM public key"), "{err}");
    // generate-key does not replace a key.
    let out =
        b.w.command()
            .args([
                "generate-key",
                "--output-key-prefix",
                key.with_extension("").to_str().unwrap(),
            ])
            .env("WASMBOX_PASSWORD", PASSWORD)
            .output()
            .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wasmbox.key exists"),
        "{}",
        stderr(&out)
    );
    // A malformed policy.
    let policy = b.w.dir().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent.pub"}]}"#,
    )
    .unwrap();
    let err = b.refused(&image, &["--policy", policy.to_str().unwrap()]);
    assert!(
        err.contains("cannot read the key /nonexistent.pub"),
        "{err}"
    );
    std::fs::write(&policy, "{\"default\": [").unwrap();
    let err = b.refused(&image, &["--policy", policy.to_str().unwrap()]);
    assert!(err.contains("is not valid JSON"), "{err}");
}

/// A policy: reject by default; `open` accepts anything; `signed` needs a
/// cosign signature by `public` (matchRepository, as cosign's identities
/// need); `strict` the same key with the default identity rule.
fn write_policy(dir: &Path, registry: &str, public: &Path) -> PathBuf {
    let path = dir.join("policy.json");
    let key = public.display();
    std::fs::write(
        &path,
        format!(
            r#"{{
  "default": [{{"type": "reject"}}],
  "transports": {{
    "docker": {{
      "{registry}/open": [{{"type": "insecureAcceptAnything"}}],
      "{registry}/signed": [{{"type": "sigstoreSigned", "keyPath": "{key}", "signedIdentity": {{"type": "matchRepository"}}}}],
      "{registry}/strict": [{{"type": "sigstoreSigned", "keyPath": "{key}"}}]
    }}
  }}
}}"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn policy_scopes_decide_as_containers_policy_json_says_and_as_skopeo_does() {
    let b = Bench::new();
    let (key, public) = b.generate_key(&b.w.dir().join("keys"));
    let policy = write_policy(b.w.dir(), &b.registry.addr, &public);
    let (open, _) = b.push("open:v1", &b.module("open"));
    let (elsewhere, _) = b.push("elsewhere:v1", &b.module("elsewhere"));
    let (signed, signed_at) = b.push("signed:v1", &b.module("signed"));
    let (strict, _) = b.push("strict:v1", &b.module("strict"));
    for image in [&signed, &strict] {
        assert!(b.sign(&key, image, "both").status.success());
    }
    let (unsigned, _) = b.push("signed:unsigned", &b.module("unsigned"));
    let p = ["--policy", policy.to_str().unwrap()];
    let verdict = |image: &str| -> Result<String, String> {
        let out = b.verify(image, &p);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(stderr(&out))
        }
    };
    let accepted = verdict(&open).unwrap();
    assert!(
        accepted.contains("accepted: insecureAcceptAnything"),
        "{accepted}"
    );
    let refused = verdict(&elsewhere).unwrap_err();
    assert!(refused.contains("is rejected by the policy"), "{refused}");
    assert!(verdict(&signed).unwrap().contains("by key"));
    assert!(verdict(&signed_at).is_ok());
    let refused = verdict(&unsigned).unwrap_err();
    assert!(
        refused.contains("is not signed by a key that the policy for"),
        "{refused}"
    );
    // cosign's identities name a repository only: the default rule refuses
    // them and says what to write.
    let refused = verdict(&strict).unwrap_err();
    assert!(
        refused.contains("signedIdentity matchRepoDigestOrExact does not accept"),
        "{refused}"
    );
    assert!(
        refused.contains(r#""signedIdentity": {"type": "matchRepository"}"#),
        "{refused}"
    );
    // `wasmbox run --policy` runs what the policy accepts, pinned to the
    // digest it checked, and refuses the rest before anything runs.
    let policy_arg = policy.to_str().unwrap();
    let out = b.w.ok(&[
        "run",
        "--policy",
        policy_arg,
        "--plain-http",
        &format!("docker://{signed}"),
    ]);
    assert_eq!(out, format!("{:<15}\n", "signed"));
    let err = b.w.fails(&[
        "run",
        "--policy",
        policy_arg,
        "--plain-http",
        &format!("docker://{unsigned}"),
    ]);
    assert!(
        err.contains("is not signed by a key that the policy for"),
        "{err}"
    );
    let err =
        b.w.fails(&["run", "--policy", policy_arg, b.hello.to_str().unwrap()]);
    assert!(
        err.contains("is a module file; --policy checks images from a registry"),
        "{err}"
    );
    // The signed tag moved to an unsigned image: its digest has no signature.
    let (moved, _) = b.push("signed:v1", &b.module("tampered"));
    assert!(
        verdict(&moved)
            .unwrap_err()
            .contains("it has no cosign signature")
    );

    // skopeo's engine (containers/image) on the same policy and images.
    // Debian 12's skopeo has sigstore verification patched out ("Debian-local
    // change: sigstore disabled"), so it is compared where no signature is
    // verified: the scopes, reject, insecureAcceptAnything, no signature.
    wasmbox_tests::require_tool("skopeo");
    let registries_d = b.w.dir().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    let skopeo_accepts = |image: &str| {
        let dest = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("skopeo")
            .args([
                "--policy",
                policy.to_str().unwrap(),
                "--registries.d",
                registries_d.to_str().unwrap(),
            ])
            .args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{image}"),
            ])
            .arg(format!("dir:{}", dest.path().display()))
            .output()
            .unwrap();
        out.status.success()
    };
    for image in [&open, &elsewhere, &unsigned, &moved] {
        assert_eq!(
            skopeo_accepts(image),
            verdict(image).is_ok(),
            "skopeo and wasmbox disagree on {image}"
        );
    }
}

/// A containerd whose shims enforce `policy`.
fn containerd_with_policy(policy: &Path) -> Containerd {
    Containerd::start_opts(ContainerdOptions {
        env: vec![("WASMBOX_POLICY".into(), policy.display().to_string())],
        ..Default::default()
    })
}

#[test]
fn the_shim_refuses_at_create_what_the_policy_does_not_accept_through_ctr() {
    let b = Bench::new();
    let (key, public) = b.generate_key(&b.w.dir().join("keys"));
    let policy = write_policy(b.w.dir(), &b.registry.addr, &public);
    let containerd = containerd_with_policy(&policy);
    let (signed, signed_at) = b.push("signed:v1", &b.hello);
    assert!(b.sign(&key, &signed, "both").status.success());
    let (unsigned, unsigned_at) = b.push("signed:unsigned", &b.module("unsigned"));
    let (open, _) = b.push("open:v1", &b.module("open"));
    let (elsewhere, _) = b.push("elsewhere:v1", &b.module("elsewhere"));
    for image in [&signed, &unsigned, &open, &elsewhere] {
        let out = containerd.ctr(&["images", "pull", "--plain-http", image]);
        assert!(out.status.success(), "ctr pull {image}: {}", stderr(&out));
    }
    let run =
        |image: &str, id: &str| containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, image, id]);
    let out = run(&signed, "signed");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");
    let out = run(&open, "open");
    assert!(out.status.success(), "{}", stderr(&out));
    // Refused at create: the sentence reaches ctr, nothing is left.
    let out = run(&unsigned, "unsigned");
    assert!(!out.status.success());
    let repo = format!("{}/signed", b.registry.addr);
    assert!(
        stderr(&out).contains(&format!(
            "image {unsigned_at} is not signed by a key that the policy for {repo} accepts (it has no cosign signature)"
        )),
        "{}",
        stderr(&out)
    );
    containerd.ctr(&["containers", "rm", "unsigned"]);
    // A signature lifted from the signed image onto another one (its `.sig`
    // tag copied): it verifies with the key, but names the other digest.
    let (tampered, tampered_at) = b.push("signed:tampered", &b.module("tampered"));
    let sig_tag = |at: &str| {
        let (repo, digest) = at.rsplit_once('@').unwrap();
        format!("{repo}:{}.sig", digest.replacen(':', "-", 1))
    };
    b.w.ok(&[
        "copy",
        &sig_tag(&signed_at),
        &sig_tag(&tampered_at),
        "--plain-http",
    ]);
    let out = containerd.ctr(&["images", "pull", "--plain-http", &tampered]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&tampered, "tampered");
    assert!(
        stderr(&out).contains(&format!(
            "image {tampered_at} is not signed by a key that the policy for {repo} accepts (its signature by the policy's key names another image, {}",
            signed_at.rsplit_once('@').unwrap().1
        )),
        "{}",
        stderr(&out)
    );
    containerd.ctr(&["containers", "rm", "tampered"]);
    let out = run(&elsewhere, "elsewhere");
    assert!(
        stderr(&out).contains("is rejected by the policy"),
        "{}",
        stderr(&out)
    );
    containerd.ctr(&["containers", "rm", "elsewhere"]);
    containerd.assert_clean();
    // containerd's record of a ctr container names its image, not a
    // digest: the shim checks what the name holds when the task is
    // created. A tag moved to an unsigned image after the container was
    // made is refused, though its snapshot holds the signed module (the
    // CRI pins the image ID; see the CRI test).
    let out = containerd.ctr(&[
        "containers",
        "create",
        "--runtime",
        RUNTIME,
        &signed,
        "pinned",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, moved_at) = b.push("signed:v1", &b.module("moved"));
    let out = containerd.ctr(&["images", "pull", "--plain-http", &signed]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = containerd.ctr(&["tasks", "start", "pinned"]);
    assert!(
        stderr(&out).contains(&format!("image {moved_at} is not signed by a key")),
        "{}",
        stderr(&out)
    );
    containerd.ctr(&["containers", "rm", "pinned"]);
    containerd.assert_clean();
}

/// CreateContainer, then StartContainer refused (there containerd creates
/// the task) with an error that says each of `says`: the sentence the
/// kubelet shows in `kubectl describe pod`. The container is removed.
fn refused_at_start(
    node: &wasmbox_tests::cri::CriNode,
    pod: &wasmbox_tests::cri::Pod,
    name: &str,
    image: &str,
    args: &[&str],
    says: &[&str],
) {
    let id = node.create_container(pod, name, image, args, &[]).unwrap();
    let err = node.start_container(&id).unwrap_err();
    for needle in says {
        assert!(err.message().contains(needle), "{name}: {}", err.message());
    }
    node.remove_container(&id);
}

#[test]
fn the_cri_refuses_wasm_and_linux_containers_of_a_pod_that_the_policy_does_not_accept() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = generate_key(&Wasmbox::new(), keys.path());
    let policy = keys.path().join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"":[{{"type":"sigstoreSigned","keyPath":"{}","signedIdentity":{{"type":"matchRepository"}}}}]}}}}}}"#,
            public.display()
        ),
    )
    .unwrap();
    let node = wasmbox_tests::cri::CriNode::start_with_env(
        wasmbox_tests::containerd::containerd_under_test(),
        None,
        vec![("WASMBOX_POLICY".into(), policy.display().to_string())],
    );
    let hello = node.w.dir().join("hello.wat");
    std::fs::write(&hello, guests::HELLO_WAT).unwrap();
    let signed = format!("{}/signed:v1", node.registry.addr);
    node.w.ok(&[
        "pack",
        hello.to_str().unwrap(),
        "-t",
        &signed,
        "--push",
        "--plain-http",
    ]);
    let sign = |image: &str| {
        let out = sign(&node.w, &key, image, "both");
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sign(&signed);
    node.pull(&signed);
    let unsigned_wat = node.w.dir().join("unsigned.wat");
    std::fs::write(&unsigned_wat, variant("unsigned")).unwrap();
    let unsigned = node.image("unsigned", &unsigned_wat);
    let busybox = node.linux_image();

    let pod = node
        .run_pod("signed-pod")
        .expect("the pod's sandbox is not checked");
    let id = node
        .run_container(&pod, "signed", &signed, &[], &[])
        .expect("a signed Wasm container starts");
    node.wait_exited(&id, std::time::Duration::from_secs(30));
    // The CRI pins a container to the image ID it was created from: one
    // created before the tag moves to an unsigned image still starts (it
    // runs what was checked)...
    let pinned = node
        .create_container(&pod, "pinned", &signed, &[], &[])
        .unwrap();
    let moved = node.w.dir().join("moved.wat");
    std::fs::write(&moved, variant("moved")).unwrap();
    let moved_image = node.image("signed", &moved);
    assert_eq!(moved_image, signed);
    node.start_container(&pinned)
        .expect("the container pinned to the signed image starts");
    node.wait_exited(&pinned, std::time::Duration::from_secs(30));
    // ...and one created after it is refused.
    refused_at_start(
        &node,
        &pod,
        "moved",
        &signed,
        &[],
        &["/signed accepts (it has no cosign signature)"],
    );
    // Refused at StartContainer (where containerd creates the task), with
    // the sentence the kubelet shows in `kubectl describe pod`.
    refused_at_start(
        &node,
        &pod,
        "unsigned",
        &unsigned,
        &[],
        &[
            "is not signed by a key that the policy for",
            "/unsigned accepts",
        ],
    );
    // The pod's Linux container meets the same policy: unsigned, refused...
    refused_at_start(
        &node,
        &pod,
        "linux",
        &busybox,
        &["true"],
        &["/busybox accepts (it has no cosign signature)"],
    );
    // ...signed, it runs.
    sign(&busybox);
    let id = node
        .run_container(&pod, "linux-signed", &busybox, &["true"], &[])
        .expect("a signed Linux container starts");
    node.wait_exited(&id, std::time::Duration::from_secs(30));
    node.remove_pod(&pod);
    node.assert_clean(&[]);
}

#[test]
fn docker_run_shows_the_refusal_and_runs_what_the_policy_accepts() {
    let keys = tempfile::tempdir().unwrap();
    let w = Wasmbox::new();
    let (key, public) = generate_key(&w, keys.path());
    let policy = signed_by_policy(&keys.path().join("policy.json"), &public);
    let Some(docker) = wasmbox_tests::docker::DockerEngine::start_with_env(vec![(
        "WASMBOX_POLICY".into(),
        policy.display().to_string(),
    )]) else {
        return;
    };
    let hello = w.dir().join("hello.wat");
    std::fs::write(&hello, guests::HELLO_WAT).unwrap();
    let in_netns = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = w.command();
        cmd.args(args).envs(env.iter().copied());
        docker.netns().enter(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "wasmbox {args:?}: {}", stderr(&out));
    };
    let signed = format!("{}:v1", docker.registry.image("signed"));
    let unsigned = format!("{}:v1", docker.registry.image("unsigned"));
    for image in [&signed, &unsigned] {
        in_netns(
            &[
                "pack",
                hello.to_str().unwrap(),
                "-t",
                image,
                "--push",
                "--plain-http",
            ],
            &[],
        );
    }
    in_netns(
        &[
            "sign",
            &signed,
            "--key",
            key.to_str().unwrap(),
            "--plain-http",
        ],
        &[("WASMBOX_PASSWORD", PASSWORD)],
    );
    let run = |image: &str| {
        docker.run(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasi/wasm",
            image,
        ])
    };
    let out = run(&signed);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");
    let out = run(&unsigned);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not signed by a key that the policy for")
            && stderr(&out).contains("it has no cosign signature"),
        "{}",
        stderr(&out)
    );
    // The signed tag re-pushed with an unsigned module and pulled again:
    // `docker run` of the same name is refused.
    let moved = w.dir().join("moved.wat");
    std::fs::write(&moved, variant("moved")).unwrap();
    in_netns(
        &[
            "pack",
            moved.to_str().unwrap(),
            "-t",
            &signed,
            "--push",
            "--plain-http",
        ],
        &[],
    );
    docker.ok(&["pull", "--platform", "wasi/wasm", &signed]);
    let out = run(&signed);
    assert!(
        stderr(&out).contains("is not signed by a key that the policy for")
            && stderr(&out).contains("it has no cosign signature"),
        "{}",
        stderr(&out)
    );
    docker.assert_clean();
}

#[test]
fn notation_signatures_verify_under_notations_trust_policy() {
    let b = Bench::new();
    let notation = wasmbox_tests::signing::Tool::new("notation", &b.w.dir().join("notation-home"));
    notation.ok(&["cert", "generate-test", "--default", "wasmbox-test"], &[]);
    let config = b.w.dir().join("notation-home/.config/notation");
    std::fs::write(
        config.join("trustpolicy.json"),
        r#"{"version":"1.0","trustPolicies":[{"name":"wasmbox-test","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:wasmbox-test"],"trustedIdentities":["*"]}]}"#,
    )
    .unwrap();
    let (_, signed_at) = b.push("notation:v1", &b.module("notation"));
    notation.ok(&["sign", "--insecure-registry", &signed_at], &[]);
    // notation itself accepts it, and so does wasmbox, from the same files.
    notation.ok(&["verify", "--insecure-registry", &signed_at], &[]);
    let out = b.verify(&signed_at, &["--notation", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("notation signature by CN=wasmbox-test"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // notation's other envelope format, COSE.
    let (_, cose_at) = b.push("notation:cose", &b.module("notation-cose"));
    notation.ok(
        &[
            "sign",
            "--insecure-registry",
            "--signature-format",
            "cose",
            &cose_at,
        ],
        &[],
    );
    let out = b.verify(&cose_at, &["--notation", config.to_str().unwrap()]);
    assert!(out.status.success(), "COSE: {}", stderr(&out));
    // wasmbox signs as notation does, with notation's test key and
    // certificate: `notation verify` accepts it.
    let (_, by_wasmbox) = b.push("notation:by-wasmbox", &b.module("notation-wasmbox"));
    let local = config.join("localkeys");
    b.w.ok(&[
        "sign",
        &by_wasmbox,
        "--format",
        "notation",
        "--key",
        local.join("wasmbox-test.key").to_str().unwrap(),
        "--cert",
        local.join("wasmbox-test.crt").to_str().unwrap(),
        "--plain-http",
    ]);
    notation.ok(&["verify", "--insecure-registry", &by_wasmbox], &[]);
    assert!(
        b.verify(&by_wasmbox, &["--notation", config.to_str().unwrap()])
            .status
            .success()
    );
    // Unsigned, and signed by a certificate the trust store does not hold.
    let (unsigned, _) = b.push("notation:unsigned", &b.module("notation-unsigned"));
    let err = b.refused(&unsigned, &["--notation", config.to_str().unwrap()]);
    assert!(err.contains("it has no notation signature"), "{err}");
    let stranger = wasmbox_tests::signing::Tool::new("notation", &b.w.dir().join("stranger-home"));
    stranger.ok(&["cert", "generate-test", "--default", "stranger"], &[]);
    let (_, other_at) = b.push("notation:other", &b.module("notation-other"));
    stranger.ok(&["sign", "--insecure-registry", &other_at], &[]);
    let err = b.refused(&other_at, &["--notation", config.to_str().unwrap()]);
    assert!(
        err.contains("its signing certificate does not chain to the trust policy's trust stores"),
        "{err}"
    );
}

/// A C program compiled by clang: its producers section names C and clang.
fn c_module(dir: &Path) -> PathBuf {
    let wasm = dir.join("hello-c.wasm");
    wasmbox_tests::compile_c(
        "#include <stdio.h>\nint main(void) { puts(\"hello from C\"); return 0; }\n",
        &wasm,
    );
    wasm
}

#[test]
fn sboms_attach_as_referrers_that_oras_discovers_and_inspect_shows() {
    let b = Bench::new();
    let module = c_module(b.w.dir());
    let image = b.registry.image("sbom:v1");
    let out = b.w.ok(&[
        "pack",
        module.to_str().unwrap(),
        "-t",
        &image,
        "--push",
        "--plain-http",
        "--sbom",
        "--json",
    ]);
    let packed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let digest = packed["digest"].as_str().unwrap();
    let sbom_digest = packed["sbom"].as_str().unwrap();
    let at = format!("{}/sbom@{digest}", b.registry.addr);

    // oras (through the referrers tag schema of this registry) lists it...
    let oras = wasmbox_tests::signing::Tool::new("oras", &b.w.dir().join("oras-home"));
    let listed: serde_json::Value =
        serde_json::from_str(&oras.ok(&["discover", "--plain-http", "--format", "json", &at], &[]))
            .unwrap();
    let referrers = listed["referrers"].as_array().unwrap();
    let entry = referrers
        .iter()
        .find(|r| r["artifactType"] == "application/spdx+json")
        .unwrap_or_else(|| panic!("oras discover lists no SBOM: {listed}"));
    assert_eq!(entry["digest"], sbom_digest);
    // ...and its document names the module by the digest of its bytes.
    let pulled = b.w.dir().join("pulled");
    oras.ok(
        &[
            "pull",
            "--plain-http",
            "-o",
            pulled.to_str().unwrap(),
            &format!("{}/sbom@{sbom_digest}", b.registry.addr),
        ],
        &[],
    );
    let file = std::fs::read_dir(&pulled)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let module_digest = wasmbox::format::Digest::of(&std::fs::read(&module).unwrap());
    assert_eq!(
        doc["packages"][0]["checksums"][0]["checksumValue"],
        module_digest.hex()
    );
    let names: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.contains("clang")), "{names:?}");

    // A signature next to it: inspect shows both kinds.
    let (key, _) = b.generate_key(&b.w.dir().join("keys"));
    assert!(b.sign(&key, &image, "both").status.success());
    let info = b.w.inspect(&image, &["--remote", "--plain-http"]);
    let kinds: Vec<(String, String)> = info["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["format"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("sbom", "SPDX"),
        ("signature", "cosign bundle"),
        ("signature", "cosign .sig tag"),
    ] {
        assert!(
            kinds.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{kinds:?}"
        );
    }
    let text = b.w.ok(&["inspect", &image, "--remote", "--plain-http"]);
    assert!(
        text.contains("Signatures:") && text.contains("SBOMs:"),
        "{text}"
    );

    // `wasmbox sbom` attaches one to an image already pushed.
    let (plain, plain_at) = b.push("sbom-later:v1", &module);
    b.w.ok(&["sbom", &plain, "--plain-http"]);
    let listed = oras.ok(
        &["discover", "--plain-http", "--format", "json", &plain_at],
        &[],
    );
    assert!(listed.contains("application/spdx+json"), "{listed}");

    // A module with no producers section: refused before anything is stored.
    let err = b.w.fails(&[
        "pack",
        b.hello.to_str().unwrap(),
        "-t",
        &b.registry.image("bare:v1"),
        "--push",
        "--plain-http",
        "--sbom",
    ]);
    assert!(err.contains("hello.wasm has no producers section"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !b.w.images().iter().any(|i| i.contains("bare")),
        "{:?}",
        b.w.images()
    );
}

#[test]
fn a_runtime_handlers_own_policy_wins_over_containerds_environment() {
    use wasmbox_tests::cri::{CONFIGURED_HANDLER, CriNode, HANDLER};
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = generate_key(&Wasmbox::new(), keys.path());
    // containerd's environment: anything runs. The configured handler's
    // options (ConfigPath → policy = …): a signature by the key.
    let open = keys.path().join("open.json");
    std::fs::write(&open, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let strict = signed_by_policy(&keys.path().join("strict.json"), &public);
    let node = CriNode::start_with_env(
        wasmbox_tests::containerd::containerd_under_test(),
        None,
        vec![("WASMBOX_POLICY".into(), open.display().to_string())],
    );
    std::fs::write(
        node.shim_config(),
        format!("policy = \"{}\"\n", strict.display()),
    )
    .unwrap();
    let unsigned_wat = node.w.dir().join("unsigned.wat");
    std::fs::write(&unsigned_wat, variant("unsigned")).unwrap();
    let unsigned = node.image("unsigned", &unsigned_wat);
    let signed_wat = node.w.dir().join("signed.wat");
    std::fs::write(&signed_wat, variant("signed")).unwrap();
    let signed = node.image("signed", &signed_wat);
    let out = sign(&node.w, &key, &signed, "both");
    assert!(out.status.success(), "{}", stderr(&out));

    let plain = node.run_pod_on("plain", HANDLER).unwrap();
    let id = node
        .run_container(&plain, "unsigned", &unsigned, &[], &[])
        .expect("containerd's environment lets anything run");
    node.wait_exited(&id, std::time::Duration::from_secs(30));
    let configured = node.run_pod_on("configured", CONFIGURED_HANDLER).unwrap();
    refused_at_start(
        &node,
        &configured,
        "unsigned",
        &unsigned,
        &[],
        &["/unsigned accepts (it has no cosign signature)"],
    );
    let id = node
        .run_container(&configured, "signed", &signed, &[], &[])
        .expect("the handler's policy accepts the signed image");
    node.wait_exited(&id, std::time::Duration::from_secs(30));
    node.remove_pod(&plain);
    node.remove_pod(&configured);
    node.assert_clean(&[]);
}
