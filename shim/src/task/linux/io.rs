//! A runc process's standard streams: the FIFOs passed through as its
//! descriptors (stdin through a relay, so that containerd's FIFO can close
//! without ending the process's input early), or a console socket whose
//! terminal master the shim relays to the FIFOs.

use std::path::Path;

use anyhow::Result;

use crate::runc::RuncIo;
use crate::stdio::ProcessIo;

/// Runs `run` (a runc create or exec) with the process's stdio: the FIFOs
/// passed through as its descriptors, or with `terminal`, a console socket
/// whose terminal master is then relayed to the FIFOs.
pub(super) fn with_stdio(
    stdio: [&str; 3],
    terminal: bool,
    run: impl FnOnce(Option<&Path>, RuncIo) -> Result<()>,
) -> Result<ProcessIo> {
    if terminal {
        let console = crate::stdio::ConsoleSocket::new()?;
        run(Some(console.path()), RuncIo::default())?;
        let master = console.receive()?;
        crate::stdio::relay_terminal(&master, stdio[0], stdio[1])?;
        return Ok(ProcessIo {
            terminal_master: Some(master),
            ..Default::default()
        });
    }
    let (relay, stdin) = match stdio[0] {
        "" => (None, None),
        path => {
            let (relay, pipe) = crate::stdio::InputRelay::start(path)?;
            (Some(relay), Some(pipe))
        }
    };
    let open = |path: &str| -> Result<Option<std::fs::File>> {
        Ok(crate::stdio::open_output_fifos(&[path])?.pop())
    };
    let (stdout, stderr) = (open(stdio[1])?, open(stdio[2])?);
    let mut kept = Vec::new();
    for f in [&stdout, &stderr].into_iter().flatten() {
        kept.push(f.try_clone()?);
    }
    run(
        None,
        RuncIo {
            stdin,
            stdout,
            stderr,
        },
    )?;
    Ok(ProcessIo {
        output_fifos: kept,
        stdin: relay,
        ..Default::default()
    })
}
