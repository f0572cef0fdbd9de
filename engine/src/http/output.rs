//! Where the requests' stdout and stderr go: one writer per stream, shared
//! by every request of the server. A request holds its place in the
//! server's concurrency (and its output buffers in the container's memory
//! budget) until its output is written, so a reader that takes nothing
//! (`ctr run -d` reads no FIFO) must not hold requests for ever: after
//! [`OUTPUT_STALL`] without progress, output is written only as far as the
//! pipe takes it at once, the rest dropped, until the reader catches up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

/// How long one request's output may wait for the reader before the
/// stream counts as unread.
pub(super) const OUTPUT_STALL: Duration = Duration::from_secs(2);

pub(super) struct OutputSink {
    writer: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    /// The reader took nothing for [`OUTPUT_STALL`]: write without waiting.
    stalled: AtomicBool,
}

impl OutputSink {
    pub(super) fn new(writer: Box<dyn AsyncWrite + Send + Unpin>) -> OutputSink {
        OutputSink {
            writer: Mutex::new(writer),
            stalled: AtomicBool::new(false),
        }
    }

    /// Writes one request's output, waiting at most [`OUTPUT_STALL`] for
    /// the reader (not at all while it is stalled).
    pub(super) async fn write(&self, bytes: &[u8]) {
        let mut writer = self.writer.lock().await;
        let stalled = self.stalled.load(Ordering::Relaxed);
        let write = async {
            writer.write_all(bytes).await?;
            writer.flush().await
        };
        let written = if stalled {
            // One poll: what fits goes out now. (A zero timeout would wait
            // for the timer's next tick, a millisecond per request.)
            let mut write = std::pin::pin!(write);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            write.as_mut().poll(&mut cx).is_ready()
        } else {
            tokio::time::timeout(OUTPUT_STALL, write).await.is_ok()
        };
        match (written, stalled) {
            (true, true) => {
                self.stalled.store(false, Ordering::Relaxed);
                log::info!("the wasi:http server's output is read again");
            }
            (false, false) => {
                self.stalled.store(true, Ordering::Relaxed);
                log::warn!(
                    "nobody reads the wasi:http server's output: it is dropped until a reader takes it"
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn an_unread_stream_stops_holding_requests_and_recovers_when_read() {
        let (sender, mut receiver) = tokio::net::unix::pipe::pipe().unwrap();
        let sink = OutputSink::new(Box::new(sender));
        // More than a pipe holds, and nobody reads.
        let big = vec![b'x'; 1 << 20];
        let started = Instant::now();
        sink.write(&big).await;
        assert!(
            started.elapsed() < OUTPUT_STALL * 3,
            "the write waited for ever"
        );
        assert!(sink.stalled.load(Ordering::Relaxed));
        let started = Instant::now();
        sink.write(&big).await;
        assert!(
            started.elapsed() < OUTPUT_STALL / 2,
            "a stalled stream still waits"
        );
        // The reader drains the pipe: the next line goes through whole.
        let mut drained = vec![0u8; 1 << 21];
        let mut total = 0;
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), receiver.read(&mut drained)).await
        {
            total += n;
        }
        assert!(total > 0);
        sink.write(b"hello\n").await;
        assert!(!sink.stalled.load(Ordering::Relaxed));
        let mut line = [0u8; 6];
        receiver.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"hello\n");
    }
}
