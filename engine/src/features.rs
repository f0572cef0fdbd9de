//! The Wasm proposals an annotation may turn on or off, in one table: the
//! names users write and how each is set on wasmtime's configuration.

use anyhow::{Result, bail};
use wasmtime::Config;

/// A feature set: (proposal name, on) pairs beyond wasmtime's defaults.
pub(crate) type Features = Vec<(String, bool)>;

/// Sets one proposal on or off in a wasmtime configuration.
type Setter = fn(&mut Config, bool) -> &mut Config;

/// Every feature an annotation may name, by its proposal name.
const FEATURES: [(&str, Setter); 12] = [
    ("simd", Config::wasm_simd),
    ("relaxed-simd", Config::wasm_relaxed_simd),
    ("multi-memory", Config::wasm_multi_memory),
    ("memory64", Config::wasm_memory64),
    ("tail-call", Config::wasm_tail_call),
    ("function-references", Config::wasm_function_references),
    ("gc", Config::wasm_gc),
    ("exceptions", Config::wasm_exceptions),
    ("custom-page-sizes", Config::wasm_custom_page_sizes),
    ("wide-arithmetic", Config::wasm_wide_arithmetic),
    ("extended-const", Config::wasm_extended_const),
    ("stack-switching", Config::wasm_stack_switching),
];

/// The names of the features an annotation may turn on or off.
pub fn known_features() -> impl Iterator<Item = &'static str> {
    FEATURES.iter().map(|(name, _)| *name)
}

fn setter(name: &str) -> Option<Setter> {
    FEATURES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Parses `a,+b,-c` into (feature, on) pairs, refusing unknown names.
pub fn parse_features(list: &str) -> Result<Features> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, on) = match item.strip_prefix('-') {
            Some(n) => (n, false),
            None => (item.trim_start_matches('+'), true),
        };
        if setter(name).is_none() {
            bail!(
                "unknown Wasm feature `{name}` (known: {})",
                known_features().collect::<Vec<_>>().join(", ")
            );
        }
        out.push((name.to_string(), on));
    }
    Ok(out)
}

/// wasmtime's configuration for a feature set: epoch interruption (kill and
/// deadlines), the component model, the features on or off.
pub(crate) fn config(features: &[(String, bool)]) -> Result<Config> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    for (name, on) in features {
        let Some(set) = setter(name) else {
            bail!("unknown Wasm feature `{name}`");
        };
        set(&mut config, *on);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_in_the_table_parses_and_configures() {
        let all: Vec<String> = known_features().map(|n| format!("-{n}")).collect();
        let parsed = parse_features(&all.join(",")).unwrap();
        assert_eq!(parsed.len(), FEATURES.len());
        assert!(parsed.iter().all(|(_, on)| !on));
        assert!(config(&parsed).is_ok());
    }

    #[test]
    fn an_unknown_feature_is_refused_with_the_known_ones_listed() {
        let err = parse_features("simd,warp-drive").unwrap_err().to_string();
        assert!(
            err.contains("`warp-drive`") && err.contains("relaxed-simd"),
            "{err}"
        );
    }
}
