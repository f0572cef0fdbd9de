//! Who may decide what a node runs: signatures and SBOMs attached to Wasm
//! images, and the policy that checks them before a guest starts.
//!
//! Everything here is a format or a rule, kept off the network so the shim
//! and the CLI share one definition:
//! [`keys`] (P-256 keys in cosign's files), [`cosign`] (the simple-signing
//! payload, the legacy `.sig` tag and the sigstore bundle referrer),
//! [`referrers`] (OCI 1.1 referrers and their tag-schema fallback),
//! [`policy`] (containers/image `policy.json`), and [`verify`], which runs a
//! policy against an image through a [`SignatureSource`] the caller
//! implements over its registry client.

pub mod cosign;
pub mod keys;
pub mod notation;
pub mod policy;
pub mod reference;
pub mod referrers;
pub mod verify;

pub use keys::{PrivateKey, PublicKey};
pub use policy::Policy;
pub use reference::DockerRef;
pub use verify::{SignatureSource, Verdict};

/// One sentence saying what is wrong, for the user who has to act on it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A key file or key field that cannot be used.
    #[error("{what} {why}")]
    Key { what: String, why: String },
    /// A policy file that cannot be read or is not a valid policy.
    #[error("{0}")]
    Policy(String),
    /// The policy does not let this image run.
    #[error("{0}")]
    Refused(String),
    /// A signature, bundle or index that is not what its media type says.
    #[error("{0}")]
    Malformed(String),
    /// The registry could not be asked (the caller's sentence).
    #[error("{0}")]
    Source(String),
}

impl TrustError {
    pub(crate) fn key(what: &str, why: &str) -> TrustError {
        TrustError::Key {
            what: what.to_string(),
            why: why.to_string(),
        }
    }
}
