//! Content digests: the one place wasmbox hashes blobs and spells
//! `sha256:<hex>`. Only sha256 is produced or accepted, as in every
//! registry and containerd store wasmbox talks to.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest (`sha256:` and 64 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest, or content does not match one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("`{0}` is not a digest (expected sha256: and 64 lowercase hex digits)")]
    Malformed(String),
    #[error("`{0}` uses a digest algorithm other than sha256, which wasmbox does not support")]
    Algorithm(String),
    #[error("the content hashes to {actual}, not {expected}")]
    Mismatch { expected: Digest, actual: Digest },
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_raw(&Sha256::digest(bytes))
    }

    /// The 64 hex digits, as content stores name their blob files.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `Ok` when `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), DigestError> {
        Digest::of(bytes).matches(self)
    }

    /// `Ok` when `self` (what content hashed to) is `expected`.
    pub fn matches(self, expected: &Digest) -> Result<(), DigestError> {
        if &self == expected {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: expected.clone(),
                actual: self,
            })
        }
    }

    /// From a blob file's name in a content store (the hex digits alone).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(DigestError::Malformed(hex.to_string()))
        }
    }

    fn from_raw(raw: &[u8]) -> Digest {
        let mut hex = String::with_capacity(64);
        for b in raw {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest { hex }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        match s.split_once(':') {
            Some(("sha256", hex)) => {
                Digest::from_hex(hex).map_err(|_| DigestError::Malformed(s.to_string()))
            }
            Some((algorithm, _))
                if !algorithm.is_empty()
                    && algorithm.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                    }) =>
            {
                Err(DigestError::Algorithm(s.to_string()))
            }
            _ => Err(DigestError::Malformed(s.to_string())),
        }
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes what passes through it: a blob is digested while it is written
/// (to a file, a socket, an upload), never held whole to hash it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The writer back, with the digest and size of all that was written.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_raw(&self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes bytes fed in pieces (a stream read chunk by chunk).
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest::from_raw(&self.0.finalize())
    }
}

/// Reads through to `inner`, hashing as it goes, and turns the end of the
/// content into an `InvalidData` error when it does not hash to `expected`:
/// a reader that copies to the end has verified what it copied.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
    read: u64,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            hasher: Some(Hasher::default()),
            expected,
            read: 0,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(n);
        };
        if n > 0 {
            hasher.update(&buf[..n]);
            self.read += n as u64;
            return Ok(n);
        }
        if !buf.is_empty()
            && let Some(hasher) = self.hasher.take()
        {
            hasher.finish().matches(&self.expected).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{e} ({} bytes read)", self.read),
                )
            })?;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn verifying_reader_fails_at_the_end_of_content_that_does_not_match() {
        let good = Digest::of(b"abc");
        let mut out = Vec::new();
        io::copy(
            &mut VerifyingReader::new(&b"abc"[..], good.clone()),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"abc");
        let err = io::copy(
            &mut VerifyingReader::new(&b"abd"[..], good),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("hashes to sha256:"), "{err}");
    }
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_empty_blob_has_the_well_known_digest() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), Digest::of(b""));
    }

    #[test]
    fn malformed_and_foreign_digests_are_refused_with_their_reason() {
        for bad in ["", "sha256:", "sha256:abc", "e3b0", &EMPTY.to_uppercase()] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(DigestError::Malformed(_))),
                "{bad}"
            );
        }
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(matches!(
            sha512.parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
    }

    #[test]
    fn verify_tells_a_match_from_a_mismatch() {
        let d = Digest::of(b"hello");
        assert!(d.verify(b"hello").is_ok());
        let err = d.verify(b"hellO").unwrap_err();
        assert!(err.to_string().contains("not sha256:"), "{err}");
    }

    #[test]
    fn the_hashing_writer_and_the_hasher_agree_with_one_shot_hashing() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        let (inner, digest, size) = w.finish();
        assert_eq!((inner.as_slice(), size), (&b"hello"[..], 5));
        assert_eq!(digest, Digest::of(b"hello"));
        let mut h = Hasher::default();
        h.update(b"he");
        h.update(b"llo");
        assert_eq!(h.finish(), Digest::of(b"hello"));
    }
}
