//! Logging, time and WASI probe (raw ABI v0.2.1 exports, no SDK). Everything happens in
//! `proxy_on_request_headers`; a request with `x-probe-mode: proc-exit` calls `proc_exit`.
//!
//! The level of each line is part of what the suite checks: the probe logs
//! `observed logging.level<N> …` through `proxy_log` at level N, and prints
//! `observed logging.stdout …` / `observed logging.stderr …` with `println!`/`eprintln!`
//! (WASI `fd_write` to 1 and 2); the suite reads the level the host gave each line.

use wasmesh_conformance_probe_support::{self as s, raw};

s::export_allocator!();

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_ctx: u32, _size: u32) -> u32 {
    1
}

fn write_fd(fd: u32, text: &str) -> (u32, usize) {
    let iov: [u32; 2] = [text.as_ptr() as u32, text.len() as u32];
    let mut written = 0usize;
    // SAFETY: one iovec describing `text`; the out-pointer is a local.
    let errno = unsafe { raw::fd_write(fd, iov.as_ptr(), 1, &mut written) };
    (errno, written)
}

fn clock(id: u32) -> (u32, u64) {
    let mut t = 0u64;
    // SAFETY: the out-pointer is a local.
    let errno = unsafe { raw::clock_time_get(id, 1, &mut t) };
    (errno, t)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _n: u32, _eos: u32) -> u32 {
    if s::request_header("x-probe-mode").as_deref() == Some("proc-exit") {
        s::observe("logging.proc_exit", "calling");
        // SAFETY: ends the module's run; the host decides what that means for the request.
        unsafe { raw::proc_exit(3) }
    }

    for level in 0..=5u32 {
        let line = format!("observed logging.level{level} line");
        // SAFETY: the pointer and length describe `line`.
        let status = unsafe { raw::proxy_log(level, line.as_ptr(), line.len()) };
        s::observe_status("logging.proxy_log_status", status);
    }
    let mut level = 99u32;
    // SAFETY: the out-pointer is a local.
    let status = unsafe { raw::proxy_get_log_level(&mut level) };
    s::observe(
        "logging.get_log_level",
        format!("{} {level}", s::status_name(status)),
    );

    println!("observed logging.stdout line");
    eprintln!("observed logging.stderr line");
    let text = "observed logging.fd_write_raw line\n";
    let (errno, written) = write_fd(1, text);
    s::observe("logging.fd_write_errno", s::errno_name(errno));
    s::observe(
        "logging.fd_write_written",
        format!("{written} of {}", text.len()),
    );
    s::observe("logging.fd_write_bad_fd", s::errno_name(write_fd(3, "x").0));

    let mut now = 0u64;
    // SAFETY: the out-pointer is a local.
    let status = unsafe { raw::proxy_get_current_time_nanoseconds(&mut now) };
    s::observe_status("logging.current_time_status", status);
    s::observe("logging.current_time_ns", now);
    let (errno, realtime) = clock(0);
    s::observe("logging.clock_realtime_errno", s::errno_name(errno));
    s::observe("logging.clock_realtime_ns", realtime);
    let (e1, m1) = clock(1);
    let (e2, m2) = clock(1);
    s::observe(
        "logging.clock_monotonic",
        format!("{} {} {m1} {m2}", s::errno_name(e1), s::errno_name(e2)),
    );
    s::observe("logging.clock_bad_id", s::errno_name(clock(7).0));

    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    // SAFETY: each buffer is 32 writable bytes.
    let (ea, eb) = unsafe {
        (
            raw::random_get(a.as_mut_ptr(), 32),
            raw::random_get(b.as_mut_ptr(), 32),
        )
    };
    s::observe(
        "logging.random_get",
        format!(
            "{} {} {} {}",
            s::errno_name(ea),
            s::errno_name(eb),
            s::hex(&a),
            s::hex(&b)
        ),
    );
    let mut big = vec![0u8; 64 * 1024 + 1];
    // SAFETY: `big` has that many writable bytes.
    let errno = unsafe { raw::random_get(big.as_mut_ptr(), big.len()) };
    s::observe("logging.random_get_too_large", s::errno_name(errno));

    let (mut count, mut size) = (99usize, 99usize);
    // SAFETY: out-pointers are locals.
    let errno = unsafe { raw::environ_sizes_get(&mut count, &mut size) };
    s::observe(
        "logging.environ_sizes_get",
        format!("{} {count} {size}", s::errno_name(errno)),
    );
    let mut env_ptrs = [std::ptr::null_mut::<u8>(); 4];
    let mut env_buf = [0u8; 64];
    // SAFETY: with no variables nothing is written; there is room for a few anyway.
    let errno = unsafe { raw::environ_get(env_ptrs.as_mut_ptr(), env_buf.as_mut_ptr()) };
    s::observe("logging.environ_get", s::errno_name(errno));
    let (mut argc, mut argv_size) = (99usize, 99usize);
    // SAFETY: out-pointers are locals.
    let errno = unsafe { raw::args_sizes_get(&mut argc, &mut argv_size) };
    s::observe(
        "logging.args_sizes_get",
        format!("{} {argc} {argv_size}", s::errno_name(errno)),
    );
    let mut arg_ptrs = [std::ptr::null_mut::<u8>(); 4];
    let mut arg_buf = [0u8; 64];
    // SAFETY: with no arguments nothing is written; there is room for a few anyway.
    let errno = unsafe { raw::args_get(arg_ptrs.as_mut_ptr(), arg_buf.as_mut_ptr()) };
    s::observe("logging.args_get", s::errno_name(errno));
    s::CONTINUE
}
