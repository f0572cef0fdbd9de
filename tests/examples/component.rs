//! Builds a component from a directory holding `wit/` (its world) and
//! `WORLD.wat` (the core module), as the tests do:
//! `cargo run -p wasmbox-tests --example component -- examples/http-hello hello http-hello.wasm`

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, world, out] = args.as_slice() else {
        eprintln!("usage: component DIR WORLD OUT.wasm");
        return std::process::ExitCode::from(2);
    };
    let bytes = wasmbox_tests::component_from_wat(std::path::Path::new(dir), world);
    if let Err(e) = std::fs::write(out, bytes) {
        eprintln!("error: writing {out}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    println!("wrote {out}");
    std::process::ExitCode::SUCCESS
}
