//! containerd's `start` handshake, both generations of it.
//!
//! containerd 2.3+ writes a `BootstrapParams` message (protobuf, from its
//! `api/runtime/bootstrap/v1/bootstrap.proto`, generated in
//! `containerd-shim-protos`) to the shim's stdin and parses a
//! `BootstrapResult` from its stdout. containerd 1.6 to 2.2 pass the same
//! facts as flags and environment, at most the runtime options (a protobuf
//! `Any`) on stdin, and read the bare socket address (the only answer 1.6
//! understands; 2.3+ still accepts it, deprecated). Legacy runtime options
//! also decode as `BootstrapParams`, so the two are told apart by what they
//! carry, never by whether they parse.

use std::io::{IsTerminal, Read};

use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult, LogLevel, nearest_log_level};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Enum, Message};

/// What containerd sends at most on stdin (its own cap).
const MAX_INPUT: u64 = 10 << 20;
/// The longest path a unix socket address holds (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The environment variable `start` passes the server's log level in
/// (containerd 2.3+ sends a level; older ones only `-debug`).
pub const SHIM_LOG_LEVEL: &str = "WASMBOX_SHIM_LOG_LEVEL";

/// The protocol the shim answers containerd in.
const PROTOCOL: &str = "ttrpc";

/// What containerd asked `start` for, in one of its two ways.
#[derive(Debug, Clone, PartialEq)]
pub enum Handshake {
    /// containerd 2.3+: the parameters, checked against the command line.
    Bootstrap(Box<BootstrapParams>),
    /// containerd 1.6 to 2.2: flags and environment, and the runtime options
    /// when the runtime's config has any.
    Legacy { options: Option<Any> },
}

/// Why a `start` refuses what containerd sent: one sentence each.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BootstrapError {
    #[error("reading containerd's bootstrap parameters from stdin: {0}")]
    Read(String),
    #[error(
        "stdin holds {0} bytes that are neither containerd's BootstrapParams nor runtime options"
    )]
    Unreadable(usize),
    #[error(
        "containerd's BootstrapParams are for {params_namespace}/{params_id}, but the command line names {namespace}/{id}"
    )]
    Mismatch {
        params_namespace: String,
        params_id: String,
        namespace: String,
        id: String,
    },
    #[error("containerd's BootstrapParams for {0} carry no containerd TTRPC address")]
    NoTtrpcAddress(String),
    #[error(
        "socket_dir {dir} is too long: the shim's socket in it would be a {len}-byte path, and a unix socket path holds at most {MAX_SOCKET_PATH}"
    )]
    SocketDirTooLong { dir: String, len: usize },
}

/// Reads what containerd piped to `start` (nothing when run by hand from a
/// terminal).
pub fn read_stdin() -> Result<Vec<u8>, BootstrapError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut input = Vec::new();
    stdin
        .lock()
        .take(MAX_INPUT)
        .read_to_end(&mut input)
        .map_err(|e| BootstrapError::Read(e.to_string()))?;
    Ok(input)
}

/// Tells which handshake `input` (the `start` action's stdin) is, for the
/// container `id` in `namespace` the command line names.
impl Handshake {
    /// The runtime's options, as each handshake carries them: on stdin for
    /// containerd before 2.3, as a `BootstrapParams` extension after.
    pub fn runtime_options(&self) -> Option<&Any> {
        match self {
            Handshake::Legacy { options } => options.as_ref(),
            Handshake::Bootstrap(params) => params
                .extensions
                .iter()
                .filter_map(|e| e.value.as_ref())
                .find(|a| a.type_url.ends_with(crate::options::RUNTIME_OPTIONS_TYPE)),
        }
    }
}

pub fn parse(input: &[u8], id: &str, namespace: &str) -> Result<Handshake, BootstrapError> {
    if input.is_empty() {
        return Ok(Handshake::Legacy { options: None });
    }
    if let Ok(params) = BootstrapParams::parse_from_bytes(input) {
        if params.instance_id == id && params.namespace == namespace {
            if params.containerd_ttrpc_address.is_empty() {
                return Err(BootstrapError::NoTtrpcAddress(format!("{namespace}/{id}")));
            }
            return Ok(Handshake::Bootstrap(Box::new(params)));
        }
        // An `Any` decodes as BootstrapParams with its type URL as the
        // instance id and its value as the namespace, and nothing else set;
        // anything more is real parameters meant for another instance.
        let identity_only = BootstrapParams {
            instance_id: params.instance_id.clone(),
            namespace: params.namespace.clone(),
            ..Default::default()
        };
        if params != identity_only && !params.containerd_ttrpc_address.is_empty() {
            return Err(BootstrapError::Mismatch {
                params_namespace: params.namespace,
                params_id: params.instance_id,
                namespace: namespace.to_string(),
                id: id.to_string(),
            });
        }
    }
    match Any::parse_from_bytes(input) {
        Ok(any)
            if !any.type_url.is_empty()
                && any.special_fields.unknown_fields().iter().next().is_none() =>
        {
            Ok(Handshake::Legacy { options: Some(any) })
        }
        _ => Err(BootstrapError::Unreadable(input.len())),
    }
}

impl Handshake {
    /// The `StartOpts` the shim crate spawns the server with: the
    /// parameters where containerd sent them, else the legacy flags and
    /// environment.
    pub fn start_opts(&self, flags: &containerd_shim::Flags) -> containerd_shim::StartOpts {
        match self {
            Handshake::Bootstrap(params) => {
                let mut opts = containerd_shim::StartOpts::from(params.as_ref().clone());
                // The `-debug` flag comes with both protocols.
                opts.debug |= flags.debug;
                opts
            }
            Handshake::Legacy { .. } => containerd_shim::StartOpts {
                id: flags.id.clone(),
                publish_binary: flags.publish_binary.clone(),
                address: flags.address.clone(),
                ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
                namespace: flags.namespace.clone(),
                debug: flags.debug,
                ..Default::default()
            },
        }
    }

    /// The bytes `start` prints for a server at `address` that serves the
    /// task API `version` (3, but 2 for the shim sandbox controller: a pod
    /// server runs the pod's containers, and containerd runs `start` for
    /// each container only for a version-2 shim).
    pub fn answer(&self, address: &str, version: i32) -> Vec<u8> {
        match self {
            Handshake::Bootstrap(_) => BootstrapResult {
                version,
                address: address.to_string(),
                protocol: PROTOCOL.to_string(),
                ..Default::default()
            }
            .write_to_bytes()
            // Writing a message of strings and an int into a Vec cannot fail.
            .expect("encoding a BootstrapResult"),
            Handshake::Legacy { .. } => address.as_bytes().to_vec(),
        }
    }
}

/// The level the shim server logs at: containerd's level (an open enum:
/// an unknown value maps to the nearest known one, as its proto asks), or
/// debug where `-debug` was given.
pub fn log_level(opts: &containerd_shim::StartOpts) -> &'static str {
    let mut value = opts.log_level.value();
    if opts.debug {
        value = value.min(LogLevel::LOG_LEVEL_DEBUG.value());
    }
    match nearest_log_level(value) {
        LogLevel::LOG_LEVEL_TRACE => "trace",
        LogLevel::LOG_LEVEL_DEBUG => "debug",
        LogLevel::LOG_LEVEL_INFO => "info",
        LogLevel::LOG_LEVEL_WARN => "warn",
        _ => "error",
    }
}

/// Refuses a socket address whose path a unix socket cannot hold (a long
/// `socket_dir` from containerd), before anything is spawned or created.
pub fn check_socket_address(address: &str, socket_dir: Option<&str>) -> Result<(), BootstrapError> {
    let len = address.trim_start_matches("unix://").len();
    if len > MAX_SOCKET_PATH {
        return Err(BootstrapError::SocketDirTooLong {
            dir: socket_dir.unwrap_or_default().to_string(),
            len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use containerd_shim::bootstrap::Extension;
    use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageField};

    use super::*;

    const ID: &str = "pod-1";
    const NS: &str = "k8s.io";

    fn params() -> BootstrapParams {
        BootstrapParams {
            instance_id: ID.into(),
            namespace: NS.into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            containerd_version: "2.4.0".into(),
            socket_dir: Some("/run/containerd/s".into()),
            ..Default::default()
        }
    }

    /// Runtime options as containerd's typeurl writes them (a bare name).
    fn runc_options() -> Any {
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: b"\x12\x04crun".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_on_stdin_is_the_legacy_handshake() {
        assert_eq!(parse(b"", ID, NS), Ok(Handshake::Legacy { options: None }));
    }

    #[test]
    fn bootstrap_params_for_this_instance_are_the_new_handshake() {
        let mut sent = params();
        sent.extensions.push(Extension {
            value: MessageField::some(runc_options()),
            ..Default::default()
        });
        let bytes = sent.write_to_bytes().unwrap();
        assert_eq!(
            parse(&bytes, ID, NS),
            Ok(Handshake::Bootstrap(Box::new(sent)))
        );
    }

    #[test]
    fn legacy_runtime_options_are_never_taken_for_bootstrap_params() {
        let bytes = runc_options().write_to_bytes().unwrap();
        assert_eq!(
            parse(&bytes, ID, NS),
            Ok(Handshake::Legacy {
                options: Some(runc_options())
            })
        );
    }

    #[test]
    fn params_for_another_instance_are_refused() {
        let mut other = params();
        other.instance_id = "other".into();
        let err = parse(&other.write_to_bytes().unwrap(), ID, NS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "containerd's BootstrapParams are for k8s.io/other, but the command line names k8s.io/pod-1"
        );
    }

    #[test]
    fn params_without_a_ttrpc_address_are_refused() {
        let mut sent = params();
        sent.containerd_ttrpc_address.clear();
        assert_eq!(
            parse(&sent.write_to_bytes().unwrap(), ID, NS),
            Err(BootstrapError::NoTtrpcAddress("k8s.io/pod-1".into()))
        );
    }

    #[test]
    fn garbage_is_refused_in_one_sentence() {
        for garbage in [
            &b"\xff\xff\xff\xff"[..],
            b"{\"not\": \"protobuf\"}",
            b"\x0a\x05ab",
        ] {
            let err = parse(garbage, ID, NS).unwrap_err();
            assert_eq!(
                err,
                BootstrapError::Unreadable(garbage.len()),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn the_answer_is_a_bootstrap_result_or_the_bare_address() {
        let address = "unix:///run/containerd/s/0123";
        let new = Handshake::Bootstrap(Box::new(params())).answer(address, 3);
        let result = BootstrapResult::parse_from_bytes(&new).unwrap();
        assert_eq!(result.address, address);
        assert_eq!(result.protocol, "ttrpc");
        assert_eq!(result.version, 3);
        let old = Handshake::Legacy { options: None }.answer(address, 3);
        assert_eq!(old, address.as_bytes());
    }

    #[test]
    fn an_unknown_log_level_maps_to_the_nearest_known_one() {
        let mut sent = params();
        for (wire, level) in [
            (-8, "trace"),
            (-5, "debug"),
            (0, "info"),
            (3, "warn"),
            (99, "error"),
        ] {
            sent.log_level = EnumOrUnknown::from_i32(wire);
            let opts = Handshake::Bootstrap(Box::new(sent.clone()))
                .start_opts(&containerd_shim::Flags::default());
            assert_eq!(log_level(&opts), level, "wire level {wire}");
        }
    }

    #[test]
    fn a_socket_path_a_unix_socket_cannot_hold_is_refused() {
        let dir = format!("/run/{}", "d".repeat(60));
        let address = format!("unix://{dir}/{}", "a".repeat(64));
        let err = check_socket_address(&address, Some(&dir)).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "socket_dir {dir} is too long: the shim's socket in it would be a 130-byte path"
            )),
            "{err}"
        );
        assert!(check_socket_address("unix:///run/containerd/s/abc", None).is_ok());
    }
}
