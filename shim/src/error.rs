//! The shim's errors as containerd sees them. Each kind is one ttrpc code,
//! and the task service (`service/`) maps them at its boundary, nowhere else:
//! containerd, `ctr` and the kubelet tell a bad request from a failure by
//! the code, not the message.

use containerd_shim::protos::ttrpc;

/// What a task request failed with.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The container's spec or one of its annotations is wrong: the caller
    /// must change it (`INVALID_ARGUMENT`).
    #[error("{0:#}")]
    InvalidArgument(anyhow::Error),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Unimplemented(&'static str),
    /// The request does not fit the container's state, or what it needs on
    /// the node is missing (`FAILED_PRECONDITION`).
    #[error("{0:#}")]
    FailedPrecondition(anyhow::Error),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// Marks an error as the caller's (a wrong spec or annotation), wherever it
/// is raised: [`ShimError::from_create`] finds it under any context added
/// on the way up.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InvalidSpec(#[from] pub anyhow::Error);

impl ShimError {
    /// A failed `create`: the caller's fault when marked [`InvalidSpec`],
    /// else a precondition on the node (an image without the module, a
    /// mount or cgroup that cannot be made).
    pub fn from_create(e: anyhow::Error) -> ShimError {
        if e.downcast_ref::<InvalidSpec>().is_some() {
            ShimError::InvalidArgument(e)
        } else {
            ShimError::FailedPrecondition(e)
        }
    }

    pub fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_marked_spec_error_is_invalid_argument_under_any_context() {
        let marked: anyhow::Result<()> =
            Err(InvalidSpec(anyhow::anyhow!("expected ro or rw")).into());
        let e = marked.context("creating c1").unwrap_err();
        let e = ShimError::from_create(e);
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(e.to_string(), "creating c1: expected ro or rw");
        let other = ShimError::from_create(anyhow::anyhow!("mount failed"));
        assert_eq!(other.code(), ttrpc::Code::FAILED_PRECONDITION);
    }
}
