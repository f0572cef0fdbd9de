//! Progress bars on stderr when a person is watching, nothing otherwise.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Hands out byte progress bars, or hidden ones when stderr is not a terminal
/// or the output is machine-readable.
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Shows bars only when `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        let multi = (wanted && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Progress { multi }
    }

    pub fn hidden() -> Self {
        Progress { multi: None }
    }

    /// A bar for `total` bytes labelled `label`.
    pub fn bar(&self, label: &str, total: u64) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let bar = multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("the template is a constant")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar
    }
}
