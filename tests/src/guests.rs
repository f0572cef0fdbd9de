//! Guest programs for the tests: WAT modules, components made offline with
//! wit-component, and C compiled to WASI with Debian's clang. Each is built
//! once per test binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require_tool, workspace_bin};

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

/// N of the `allocated_mib=N` line the probe's `hog` mode prints, found
/// in `output`; the test fails, showing `output`, when there is none.
pub fn allocated_mib(output: &str) -> u64 {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("allocated_mib=")?.parse().ok())
        .unwrap_or_else(|| panic!("no allocated_mib=N in {output:?}"))
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
