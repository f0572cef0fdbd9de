//! What a guest may open, checked in front of wasmtime-wasi's own `open`.
//!
//! wasmtime-wasi opens any file type. Device nodes are already dead on the
//! shim's `nodev` mounts, but a FIFO without a writer would block the open
//! (and the blocking-pool thread doing it) until a writer comes, past the
//! guest's exit; sockets and anything else that is not a file or directory
//! has no WASI meaning. So the guest's opens are shadowed: the path is first
//! stat'ed and refused with `EACCES` unless it is a regular file, directory
//! or symlink (or absent, for `O_CREAT`). The guest's open-files limit is
//! answered the same way: an open that finds the resource table full gets
//! `EMFILE` (`quota` for components, which have no such code) instead of
//! the trap wasmtime-wasi makes of it.
//!
//! Sockets are the other thing a guest opens without end: their constructors
//! (`wasi:sockets` `create-tcp-socket`, `create-udp-socket`) answer a full
//! table with `new-socket-limit`, WASI's EMFILE, instead of a trap.
//!
//! The stat and the open are two steps: a guest racing itself (or a sibling
//! sharing the volume) can swap a FIFO in between and block only its own
//! open; device nodes stay dead either way through `nodev`.

use anyhow::Result;
use wasmtime::component::{Linker as ComponentLinker, Resource, ResourceTableError};
use wasmtime::{Caller, Extern, Linker};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::types::{Errno, Filetype};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};
use wasmtime_wasi::p2::SocketResult;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode as SocketErrorCode, IpAddressFamily,
};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi::p2::bindings::sockets::udp_create_socket::Host as _;
use wasmtime_wasi::sockets::WasiSocketsView;
use wiggle::{GuestMemory, GuestPtr};

/// The interfaces shadowed: the ones wasmtime-wasi registers (components
/// importing an older 0.2 minor are linked to them).
pub(crate) const P2_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
const P2_TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const P2_UDP_CREATE_SOCKET: &str = "wasi:sockets/udp-create-socket@0.2.12";

/// Replaces `wasi_snapshot_preview1.path_open` in `linker` (after
/// `p1::add_to_linker_async`) with the checked one.
pub(crate) fn guard_p1_opens<T: Send + 'static>(
    linker: &mut Linker<T>,
    wasi: fn(&mut T) -> &mut WasiP1Ctx,
) -> Result<()> {
    linker.allow_shadowing(true);
    let defined = linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "path_open",
        move |mut caller: Caller<'_, T>,
              (dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                let fuel = wasmtime::AsContextMut::as_context_mut(&mut caller).hostcall_fuel();
                let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
                    wasmtime::bail!("the guest exports no memory for path_open");
                };
                let (memory, state) = memory.data_and_store_mut(&mut caller);
                let ctx = wasi(state);
                ctx.set_hostcall_fuel(fuel);
                let mut memory = GuestMemory::Unshared(memory);
                let stat = ctx
                    .path_filestat_get(
                        &mut memory,
                        (dirfd as u32).into(),
                        wasmtime_wasi::p1::types::Lookupflags::from_bits_truncate(dirflags as u32),
                        GuestPtr::new((path as u32, path_len as u32)),
                    )
                    .await;
                if let Ok(stat) = stat
                    && !may_open_p1(stat.filetype)
                {
                    return Ok(Errno::Acces as i32);
                }
                match p1::path_open(
                    ctx,
                    &mut memory,
                    dirfd,
                    dirflags,
                    path,
                    path_len,
                    oflags,
                    base,
                    inheriting,
                    fdflags,
                    opened,
                )
                .await
                {
                    Err(e) if is_table_full(&e) => Ok(Errno::Mfile as i32),
                    other => other,
                }
            })
        },
    );
    let defined = defined.map(|_| ());
    linker.allow_shadowing(false);
    defined?;
    Ok(())
}

/// Replaces `[method]descriptor.open-at` of [`P2_FILESYSTEM_TYPES`] and the
/// socket constructors in `linker` (after `p2::add_to_linker_async`) with
/// the checked ones.
pub(crate) fn guard_p2_opens<T: WasiView + 'static>(linker: &mut ComponentLinker<T>) -> Result<()> {
    linker.allow_shadowing(true);
    let defined = define_p2_open_at(linker).and_then(|()| define_p2_sockets(linker));
    linker.allow_shadowing(false);
    defined?;
    Ok(())
}

/// `create-tcp-socket` and `create-udp-socket`, with a full table answered
/// by `new-socket-limit`.
fn define_p2_sockets<T: WasiView + 'static>(
    linker: &mut ComponentLinker<T>,
) -> wasmtime::Result<()> {
    linker.instance(P2_TCP_CREATE_SOCKET)?.func_wrap(
        "create-tcp-socket",
        |mut store, (family,): (IpAddressFamily,)| {
            let created = store.data_mut().sockets().create_tcp_socket(family);
            Ok((socket_limit(created)?,))
        },
    )?;
    linker.instance(P2_UDP_CREATE_SOCKET)?.func_wrap_async(
        "create-udp-socket",
        |mut store, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let created = store.data_mut().sockets().create_udp_socket(family).await;
                Ok((socket_limit(created)?,))
            })
        },
    )
}

/// A socket constructor's answer, with a full table as `new-socket-limit`.
fn socket_limit<S>(
    created: SocketResult<Resource<S>>,
) -> wasmtime::Result<Result<Resource<S>, SocketErrorCode>> {
    match created {
        Ok(socket) => Ok(Ok(socket)),
        Err(e) => match e.downcast() {
            Ok(code) => Ok(Err(code)),
            Err(trap) if is_table_full(&trap) => Ok(Err(SocketErrorCode::NewSocketLimit)),
            Err(trap) => Err(trap),
        },
    }
}

fn define_p2_open_at<T: WasiView + 'static>(
    linker: &mut ComponentLinker<T>,
) -> wasmtime::Result<()> {
    linker.instance(P2_FILESYSTEM_TYPES).and_then(|mut types| {
        types.func_wrap_async(
            "[method]descriptor.open-at",
            |mut store,
             (dir, path_flags, path, oflags, flags): (
                Resource<Descriptor>,
                PathFlags,
                String,
                OpenFlags,
                DescriptorFlags,
            )| {
                Box::new(async move {
                    let mut fs = store.data_mut().filesystem();
                    let borrowed = Resource::<Descriptor>::new_borrow(dir.rep());
                    if let Ok(stat) = fs.stat_at(borrowed, path_flags, path.clone()).await
                        && !may_open_p2(stat.type_)
                    {
                        return Ok((Err(ErrorCode::Access),));
                    }
                    match fs.open_at(dir, path_flags, path, oflags, flags).await {
                        Ok(opened) => Ok((Ok(opened),)),
                        Err(e) => match e.downcast() {
                            Ok(code) => Ok((Err(code),)),
                            Err(trap) if is_table_full(&trap) => Ok((Err(ErrorCode::Quota),)),
                            Err(trap) => Err(trap),
                        },
                    }
                })
            },
        )
    })
}

fn may_open_p1(filetype: Filetype) -> bool {
    matches!(
        filetype,
        Filetype::RegularFile | Filetype::Directory | Filetype::SymbolicLink
    )
}

fn may_open_p2(filetype: DescriptorType) -> bool {
    matches!(
        filetype,
        DescriptorType::RegularFile | DescriptorType::Directory | DescriptorType::SymbolicLink
    )
}

fn is_full(e: &ResourceTableError) -> bool {
    matches!(e, ResourceTableError::Full)
}

fn is_table_full(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref().is_some_and(is_full))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard shadows a name wasmtime-wasi defines: defining it again
    /// without shadowing must clash. (Were the version wrong, the guard
    /// would add an instance no component imports, silently.)
    #[test]
    fn the_guarded_functions_are_the_ones_wasmtime_wasi_defines() {
        let engine = wasmtime::Engine::default();
        let mut linker: ComponentLinker<crate::engine::ComponentState> =
            ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        for (interface, func) in [
            (P2_FILESYSTEM_TYPES, "[method]descriptor.open-at"),
            (P2_TCP_CREATE_SOCKET, "create-tcp-socket"),
            (P2_UDP_CREATE_SOCKET, "create-udp-socket"),
        ] {
            let clash = linker
                .instance(interface)
                .and_then(|mut i| i.func_wrap(func, |_, (): ()| Ok(())));
            assert!(clash.is_err(), "{interface} {func} is not defined");
        }
        guard_p2_opens(&mut linker).unwrap();
    }
}
