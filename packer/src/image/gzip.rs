//! gzip on every core, as pigz's `--independent` mode does: the input is
//! cut into fixed-size chunks, each compressed on its own to raw deflate
//! blocks ending in a sync flush (the last one in the final block), and
//! the blocks are joined under one gzip header and trailer whose CRC-32 is
//! combined from the chunks'. The result is one ordinary gzip member, so
//! every reader takes it; and since the chunk size is fixed, the same
//! input gives the same bytes (and digest) on any machine.

use std::io;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes compressed by one worker at a time. Each chunk starts without its
/// predecessor's history (deflate's 32 KiB window), so the cost in size is
/// at most the matches lost in the first 32 KiB of each MiB (not measured
/// apart from the whole change; pigz uses 128 KiB blocks the same way).
const CHUNK: usize = 1 << 20;

/// The gzip member of `data` at `level`, with a zero mtime and no name,
/// as `GzBuilder::new().mtime(0)` writes them.
pub fn compress(data: &[u8], level: Compression) -> io::Result<Vec<u8>> {
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![data]
    } else {
        data.chunks(CHUNK).collect()
    };
    let last = chunks.len() - 1;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks.len());
    let mut deflated: Vec<Option<io::Result<Deflated>>> = (0..chunks.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let slots: Vec<_> = deflated
            .chunks_mut(chunks.len().div_ceil(workers))
            .collect();
        let mut first = 0;
        for slot in slots {
            let start = first;
            first += slot.len();
            let chunks = &chunks;
            scope.spawn(move || {
                for (offset, out) in slot.iter_mut().enumerate() {
                    let index = start + offset;
                    *out = Some(deflate_chunk(chunks[index], level, index == last));
                }
            });
        }
    });
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    // ID1 ID2, deflate, no flags, mtime 0, no extra flags, OS "unknown" (255).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut crc = crc32fast::Hasher::new();
    for result in deflated {
        let (bytes, chunk_crc) = result.expect("every chunk was compressed")?;
        out.extend_from_slice(&bytes);
        crc.combine(&chunk_crc);
    }
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE: the input's length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

/// One chunk's raw deflate blocks and the CRC-32 of its input.
type Deflated = (Vec<u8>, crc32fast::Hasher);

/// Raw deflate of one chunk: ends byte-aligned with a sync flush, or with
/// the final block when it is the last chunk.
fn deflate_chunk(chunk: &[u8], level: Compression, is_last: bool) -> io::Result<Deflated> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(chunk);
    let mut compress = Compress::new(level, false);
    let mut out = Vec::with_capacity(chunk.len() / 2 + 1024);
    let flush = if is_last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&chunk[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = compress.total_in() as usize == chunk.len()
            && match status {
                Status::StreamEnd => true,
                // A sync flush is complete when it left room unused.
                Status::Ok | Status::BufError => !is_last && out.len() < out.capacity(),
            };
        if done {
            return Ok((out, crc));
        }
        out.reserve(out.capacity().max(64 << 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        // The single-member decoder: one member is what is promised.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a counter's decimal digits.
        let mut data = Vec::with_capacity(len);
        let mut i = 0u64;
        while data.len() < len {
            data.extend_from_slice(i.to_string().as_bytes());
            i = i.wrapping_mul(6364136223846793005).wrapping_add(1) % 100_000;
        }
        data.truncate(len);
        data
    }

    #[test]
    fn round_trips_across_chunk_boundaries() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let data = sample(len);
            let packed = compress(&data, Compression::default()).unwrap();
            assert_eq!(gunzip(&packed), data, "length {len}");
            assert!(len < 1000 || packed.len() < data.len() / 2, "length {len}");
        }
    }

    #[test]
    fn is_the_same_bytes_every_time() {
        let data = sample(2 * CHUNK + 7);
        let a = compress(&data, Compression::default()).unwrap();
        let b = compress(&data, Compression::default()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn gzip_the_tool_reads_it() {
        let data = sample(CHUNK + 99);
        let packed = compress(&data, Compression::fast()).unwrap();
        let mut child = std::process::Command::new("gzip")
            .args(["-t"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&packed).unwrap();
        assert!(child.wait().unwrap().success(), "gzip -t refused it");
    }
}
