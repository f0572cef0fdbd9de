//! Everything the shim mounts for a container, all under its bundle: the root
//! filesystem at `bundle/rootfs`, each directory or tmpfs of the spec at
//! `bundle/mounts/N` (preopened for the guest at its destination), and each
//! single-file bind mount over its destination inside the root filesystem.
//!
//! Every one of them is `nodev,nosuid`: the guest's file access runs in the
//! shim's process, as host root, so a device node reached through any of
//! them (an image layer's `b 7 7`, a node another container made in a shared
//! volume, a bind-mounted `/dev/…`) would otherwise open the host's device.
//!
//! `rootfs` mounts the root filesystem and unmounts everything; `guest`
//! makes the spec's mounts and the name-lookup namespace; `sys` is the
//! mount(2) calls that force `nodev,nosuid`, shared by both.

mod guest;
mod rootfs;
mod sys;
pub use sys::MOUNT_FLAGS;

pub use guest::{GuestMount, guest_mounts, make_guest_mounts, name_service_namespace};
pub use rootfs::{ContainerMounts, RootfsMount, unmount_all, unmount_tree};
