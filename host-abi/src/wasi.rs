//! The WASI preview 1 surface proxy-wasm modules import, under both `wasi_snapshot_preview1`
//! and the legacy `wasi_unstable`.
//!
//! Written by hand rather than with `wasmtime-wasi` because the ABI gives these calls their own
//! meaning — `fd_write` to stdout/stderr is the filter's log, the environment is the plugin's,
//! there is no filesystem — and because it keeps the host small. Calls a filter has no business
//! making answer `NOTSUP` (or `BADF` for file descriptors), as proxy-wasm-cpp-host does.

use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use rand::RngCore;
use wasmtime::{IntoFunc, Linker};

use crate::abi::LogLevel;
use crate::state::{Ctx, HostState, read, write, write_u32, write_u64};

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOTSUP: i32 = 58;

/// Most bytes one `random_get` may ask for (cpp-host's limit).
const MAX_RANDOM: usize = 64 * 1024;

type R = wasmtime::Result<i32>;

fn def<Params, Results>(
    linker: &mut Linker<HostState>,
    provided: &mut HashSet<(String, String)>,
    name: &str,
    f: impl IntoFunc<HostState, Params, Results> + Clone,
) -> wasmtime::Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        provided.insert((module.to_string(), name.to_string()));
        linker.func_wrap(module, name, f.clone())?;
    }
    Ok(())
}

pub(crate) fn link(
    linker: &mut Linker<HostState>,
    provided: &mut HashSet<(String, String)>,
) -> wasmtime::Result<()> {
    def(
        linker,
        provided,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, written_out: i32| -> R {
            if fd != 1 && fd != 2 {
                return Ok(BADF);
            }
            let Ok(table) = read(&mut c, iovs, n.saturating_mul(8)) else {
                return Ok(FAULT);
            };
            let mut text = Vec::new();
            for iov in table.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                match read(&mut c, ptr, len) {
                    Ok(bytes) => text.extend_from_slice(&bytes),
                    Err(_) => return Ok(FAULT),
                }
            }
            let message = String::from_utf8_lossy(&text);
            let message = message.trim_end();
            if !message.is_empty() {
                let level = if fd == 1 {
                    LogLevel::Info
                } else {
                    LogLevel::Error
                };
                c.data_mut().log(level, message);
            }
            if write_u32(&mut c, written_out, text.len() as u32).is_err() {
                return Ok(FAULT);
            }
            Ok(SUCCESS)
        },
    )?;
    def(
        linker,
        provided,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _precision: i64, out: i32| -> R {
            let nanos = match id {
                0 => c
                    .data()
                    .shared
                    .services()
                    .now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
                1 => c.data().shared.services().monotonic().as_nanos() as u64,
                _ => return Ok(NOTSUP),
            };
            Ok(if write_u64(&mut c, out, nanos).is_ok() {
                SUCCESS
            } else {
                FAULT
            })
        },
    )?;
    def(
        linker,
        provided,
        "clock_res_get",
        |mut c: Ctx<'_>, id: i32, out: i32| -> R {
            if id != 0 && id != 1 {
                return Ok(NOTSUP);
            }
            Ok(if write_u64(&mut c, out, 1).is_ok() {
                SUCCESS
            } else {
                FAULT
            })
        },
    )?;
    def(
        linker,
        provided,
        "random_get",
        |mut c: Ctx<'_>, ptr: i32, len: i32| -> R {
            let len = len as u32 as usize;
            if len > MAX_RANDOM {
                return Ok(INVAL);
            }
            let mut buf = vec![0u8; len];
            rand::rng().fill_bytes(&mut buf);
            Ok(if write(&mut c, ptr, &buf).is_ok() {
                SUCCESS
            } else {
                FAULT
            })
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        def(
            linker,
            provided,
            name,
            |mut c: Ctx<'_>, count_out: i32, size_out: i32| -> R {
                if write_u32(&mut c, count_out, 0).is_err()
                    || write_u32(&mut c, size_out, 0).is_err()
                {
                    return Ok(FAULT);
                }
                Ok(SUCCESS)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        def(linker, provided, name, |_c: Ctx<'_>, _: i32, _: i32| -> R {
            Ok(SUCCESS)
        })?;
    }
    def(
        linker,
        provided,
        "proc_exit",
        |_c: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "filter called proc_exit({code})"
            )))
        },
    )?;
    def(linker, provided, "sched_yield", |_c: Ctx<'_>| -> R {
        Ok(SUCCESS)
    })?;

    // No files: every descriptor is bad, and there are no preopened directories.
    for name in ["fd_close", "fd_sync", "fd_datasync"] {
        def(linker, provided, name, |_c: Ctx<'_>, _: i32| -> R {
            Ok(BADF)
        })?;
    }
    for name in [
        "fd_fdstat_get",
        "fd_prestat_get",
        "fd_filestat_get",
        "fd_fdstat_set_flags",
        "fd_tell",
    ] {
        def(linker, provided, name, |_c: Ctx<'_>, _: i32, _: i32| -> R {
            Ok(BADF)
        })?;
    }
    def(
        linker,
        provided,
        "fd_prestat_dir_name",
        |_c: Ctx<'_>, _: i32, _: i32, _: i32| -> R { Ok(BADF) },
    )?;
    def(
        linker,
        provided,
        "fd_read",
        |_c: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| -> R { Ok(BADF) },
    )?;
    for name in ["fd_pread", "fd_pwrite"] {
        def(
            linker,
            provided,
            name,
            |_c: Ctx<'_>, _: i32, _: i32, _: i32, _: i64, _: i32| -> R { Ok(BADF) },
        )?;
    }
    def(
        linker,
        provided,
        "fd_seek",
        |_c: Ctx<'_>, _: i32, _: i64, _: i32, _: i32| -> R { Ok(BADF) },
    )?;
    def(
        linker,
        provided,
        "fd_filestat_set_size",
        |_c: Ctx<'_>, _: i32, _: i64| -> R { Ok(BADF) },
    )?;
    def(
        linker,
        provided,
        "fd_readdir",
        |_c: Ctx<'_>, _: i32, _: i32, _: i32, _: i64, _: i32| -> R { Ok(BADF) },
    )?;
    def(
        linker,
        provided,
        "path_open",
        |_c: Ctx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i64,
         _: i64,
         _: i32,
         _: i32|
         -> R { Ok(NOTSUP) },
    )?;
    def(
        linker,
        provided,
        "path_filestat_get",
        |_c: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
    )?;
    for name in [
        "path_create_directory",
        "path_remove_directory",
        "path_unlink_file",
    ] {
        def(
            linker,
            provided,
            name,
            |_c: Ctx<'_>, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        )?;
    }
    def(
        linker,
        provided,
        "poll_oneoff",
        |_c: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
    )?;
    def(linker, provided, "proc_raise", |_c: Ctx<'_>, _: i32| -> R {
        Ok(NOTSUP)
    })?;
    Ok(())
}
