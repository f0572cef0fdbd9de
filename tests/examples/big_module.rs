//! Writes a valid WASI command module of about N MB (for `make bench`).
//! Usage: big_module MEGABYTES OUT.wasm

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mb), Some(out)) = (args.get(1).and_then(|a| a.parse().ok()), args.get(2)) else {
        eprintln!("usage: big_module MEGABYTES OUT.wasm");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::write(out, wasmbox_tests::guests::big_module(mb)) {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
}
