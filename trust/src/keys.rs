//! ECDSA P-256 keys in the files cosign reads and writes: the public key as
//! a PKIX `PUBLIC KEY` PEM, the private key as PKCS#8 sealed with scrypt and
//! NaCl secretbox in an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM (go-securesystemslib's
//! `encrypted` format), so a key made by either tool signs for the other.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::TrustError;

/// PEM label of a private key sealed the way cosign ≥ 2 writes it.
pub const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label cosign 1.x wrote; still read.
pub const LEGACY_ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// scrypt cost of keys written here: log2(N) = 16, r = 8, p = 1, what
/// cosign 3 writes (about 0.2 s and 64 MiB to open).
const SCRYPT_LOG_N: u8 = 16;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// Costs above this are refused rather than computed (a hostile key file
/// could otherwise ask for gigabytes): 2^20 with r = 8 is 1 GiB.
const SCRYPT_MAX_LOG_N: u8 = 20;

/// A P-256 public key that verifies signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// A P-256 private key that signs.
pub struct PrivateKey(SigningKey);

impl PublicKey {
    /// Reads a PKIX `PUBLIC KEY` PEM; `what` names it in errors (a file, a policy field).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<PublicKey, TrustError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| TrustError::key(what, "is not a PEM file (not text)"))?;
        if !text.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(TrustError::key(
                what,
                "is not a PEM public key (no \"BEGIN PUBLIC KEY\" block)",
            ));
        }
        VerifyingKey::from_public_key_pem(text.trim())
            .map(PublicKey)
            .map_err(|e| {
                TrustError::key(
                    what,
                    &format!("is not an ECDSA P-256 public key ({e}); wasmbox verifies P-256 keys, as cosign generate-key-pair writes them"),
                )
            })
    }

    /// The key as a PKIX PEM (what `cosign.pub` holds).
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key always encodes")
    }

    /// The PKIX DER bytes, whose SHA-256 is the key's id in a sigstore bundle hint.
    pub fn to_der(&self) -> Vec<u8> {
        self.0
            .to_public_key_der()
            .expect("a P-256 key always encodes")
            .into_vec()
    }

    /// Whether `signature` (ASN.1 DER, or the 64-byte r‖s form) signs `message`
    /// (ECDSA with SHA-256 over the message).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let parsed = match DerSignature::from_bytes(signature) {
            Ok(der) => Signature::from_der(der.as_bytes()).ok(),
            Err(_) => Signature::from_slice(signature).ok(),
        };
        parsed.is_some_and(|sig| self.0.verify(message, &sig).is_ok())
    }
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> PrivateKey {
        PrivateKey(SigningKey::random(&mut OsRng))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// An ECDSA P-256 / SHA-256 signature of `message`, ASN.1 DER (what cosign writes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.0.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    /// Reads a private key PEM: cosign's sealed form (opened with `password`),
    /// or a plain PKCS#8 `PRIVATE KEY` / SEC1 `EC PRIVATE KEY`.
    pub fn from_pem(pem: &[u8], password: &[u8], what: &str) -> Result<PrivateKey, TrustError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| TrustError::key(what, "is not a PEM file (not text)"))?;
        let (label, body) = pem_block(text)
            .ok_or_else(|| TrustError::key(what, "is not a PEM file (no \"-----BEGIN\" block)"))?;
        let der = match label.as_str() {
            ENCRYPTED_KEY_LABEL | LEGACY_ENCRYPTED_KEY_LABEL => open_sealed(&body, password, what)?,
            "PRIVATE KEY" => body,
            "EC PRIVATE KEY" => {
                return p256::SecretKey::from_sec1_der(&body)
                    .map(|k| PrivateKey(SigningKey::from(k)))
                    .map_err(|e| {
                        TrustError::key(what, &format!("is not a P-256 EC private key ({e})"))
                    });
            }
            other => {
                return Err(TrustError::key(
                    what,
                    &format!("holds a \"{other}\" block, not a private key"),
                ));
            }
        };
        SigningKey::from_pkcs8_der(&der).map(PrivateKey).map_err(|e| {
            TrustError::key(
                what,
                &format!("is not an ECDSA P-256 private key ({e}); wasmbox signs with P-256 keys, as cosign generate-key-pair writes them"),
            )
        })
    }

    /// The key sealed with `password`, in cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` PEM.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> String {
        let der = self.0.to_pkcs8_der().expect("a P-256 key always encodes");
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let key = derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
            .expect("the built-in scrypt parameters are valid");
        let ciphertext = XSalsa20Poly1305::new(&key.into())
            .encrypt(Nonce::from_slice(&nonce), der.as_bytes())
            .expect("secretbox sealing cannot fail");
        let sealed = Sealed {
            kdf: Kdf {
                name: "scrypt".into(),
                params: ScryptParams {
                    n: 1u64 << SCRYPT_LOG_N,
                    r: SCRYPT_R,
                    p: SCRYPT_P,
                },
                salt: B64.encode(salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: B64.encode(nonce),
            },
            ciphertext: B64.encode(ciphertext),
        };
        let json = serde_json::to_vec(&sealed).expect("serializable");
        pem_encode(ENCRYPTED_KEY_LABEL, &json)
    }
}

/// go-securesystemslib's `encrypted` envelope (its `[]byte` fields are base64).
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn open_sealed(body: &[u8], password: &[u8], what: &str) -> Result<Vec<u8>, TrustError> {
    let sealed: Sealed = serde_json::from_slice(body).map_err(|e| {
        TrustError::key(what, &format!("is not a sealed cosign key (its JSON: {e})"))
    })?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(TrustError::key(
            what,
            &format!(
                "is sealed with {} and {}; wasmbox opens scrypt + nacl/secretbox, as cosign writes",
                sealed.kdf.name, sealed.cipher.name
            ),
        ));
    }
    let n = sealed.kdf.params.n;
    if !n.is_power_of_two() || n < 2 {
        return Err(TrustError::key(
            what,
            "has a scrypt N that is not a power of two",
        ));
    }
    let log_n = n.trailing_zeros() as u8;
    if log_n > SCRYPT_MAX_LOG_N {
        return Err(TrustError::key(
            what,
            &format!(
                "asks for scrypt N = 2^{log_n}, more than the 2^{SCRYPT_MAX_LOG_N} wasmbox computes"
            ),
        ));
    }
    let field = |name: &str, value: &str| {
        B64.decode(value)
            .map_err(|_| TrustError::key(what, &format!("has a {name} that is not base64")))
    };
    let salt = field("salt", &sealed.kdf.salt)?;
    let nonce = field("nonce", &sealed.cipher.nonce)?;
    let ciphertext = field("ciphertext", &sealed.ciphertext)?;
    if nonce.len() != 24 {
        return Err(TrustError::key(
            what,
            "has a secretbox nonce that is not 24 bytes",
        ));
    }
    let key = derive(
        password,
        &salt,
        log_n,
        sealed.kdf.params.r,
        sealed.kdf.params.p,
    )
    .map_err(|e| TrustError::key(what, &format!("has scrypt parameters scrypt refuses ({e})")))?;
    XSalsa20Poly1305::new(&key.into())
        .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
        .map_err(|_| {
            TrustError::key(
                what,
                "cannot be opened with this password (set WASMBOX_PASSWORD, or COSIGN_PASSWORD, to the one it was sealed with)",
            )
        })
}

fn derive(password: &[u8], salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32], String> {
    let params = scrypt::Params::new(log_n, r, p, 32).map_err(|e| e.to_string())?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|e| e.to_string())?;
    Ok(key)
}

/// The label and decoded body of the first PEM block in `text`.
fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker)?;
    let body: String = rest[body_start..body_end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(':'))
        .collect();
    let bytes = B64.decode(body).ok()?;
    Some((label, bytes))
}

fn pem_encode(label: &str, bytes: &[u8]) -> String {
    let b64 = B64.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_password_only() {
        let key = PrivateKey::generate();
        let pem = key.to_encrypted_pem(b"pw");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let opened = PrivateKey::from_pem(pem.as_bytes(), b"pw", "k").unwrap();
        assert_eq!(opened.public_key(), key.public_key());
        let err = PrivateKey::from_pem(pem.as_bytes(), b"other", "cosign.key")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("cannot be opened with this password"),
            "{err}"
        );
    }

    #[test]
    fn signatures_verify_with_the_matching_public_key_only() {
        let key = PrivateKey::generate();
        let sig = key.sign(b"payload");
        let public = PublicKey::from_pem(key.public_key().to_pem().as_bytes(), "p").unwrap();
        assert!(public.verifies(b"payload", &sig));
        assert!(!public.verifies(b"payload2", &sig));
        assert!(
            !PrivateKey::generate()
                .public_key()
                .verifies(b"payload", &sig)
        );
    }

    #[test]
    fn a_key_that_is_not_p256_is_refused_in_one_sentence() {
        // An Ed25519 PKIX public key.
        let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_pem(ed.as_bytes(), "ed.pub")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ed.pub is not an ECDSA P-256 public key"),
            "{err}"
        );
        let err = PublicKey::from_pem(b"hello", "x.pub")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a PEM public key"), "{err}");
    }
}
