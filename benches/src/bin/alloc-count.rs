//! `alloc-count`: heap allocations per request in steady state, for both
//! runtimes under load. Each runtime's hello server runs in this process
//! under a counting allocator; `fcgi-load` (its own process, so its
//! allocations are not counted) sends keep-conn requests over several
//! connections. Two runs of different lengths are counted, and their
//! difference divided by the extra requests is what a request costs:
//! setting up connections and starting the load generator is the same in
//! both, so it drops out.
//!
//! ```text
//! alloc-count [REQUESTS] [CONNS] [SPIN_US]     (default 100000, 8, 0)
//! ```
//!
//! `SPIN_US` sets glommio's `Settings::spin_before_park` in microseconds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Counts every allocation in the process, then defers to the system.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let requests = args.next().map_or(Ok(100_000), |n| n.parse::<u64>());
    let conns = args.next().map_or(Ok(8), |n| n.parse::<u64>());
    let spin_us = args.next().map_or(Ok(0), |n| n.parse::<u64>());
    let (Ok(requests), Ok(conns), Ok(spin_us)) = (requests, conns, spin_us) else {
        eprintln!("usage: alloc-count [REQUESTS] [CONNS] [SPIN_US]");
        return ExitCode::from(2);
    };
    let spin = Duration::from_micros(spin_us);
    match run(requests.max(1), conns.max(1), spin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("alloc-count: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(requests: u64, conns: u64, spin: Duration) -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("sfcgi-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "allocations per keep-conn request, {conns} connections, glommio spins {} µs before it sleeps",
        spin.as_micros()
    );
    println!(
        "| runtime | per request | {requests} requests | {} requests |",
        5 * requests
    );
    println!("| --- | --- | --- | --- |");
    let std_sock = dir.join("std.sock");
    let std_addr = format!("unix:{}", std_sock.display());
    let server = simple_fastcgi_std::Server::bind(
        &std_addr,
        |req: &mut simple_fastcgi_std::Request<'_>| {
            req.send_response(200, "text/plain", "Hello, world!", &[], false)
        },
    )?
    .with_settings(simple_fastcgi_std::Settings {
        handle_signals: false,
        ..simple_fastcgi_std::Settings::default()
    });
    let handle = server.handle();
    let serving = thread::spawn(move || server.serve_forever());
    count("std", &std_addr, (requests, conns), serving, || {
        handle.shutdown()
    })?;

    let glommio_sock = dir.join("glommio.sock");
    let glommio_addr = format!("unix:{}", glommio_sock.display());
    let server = simple_fastcgi_glommio::AsyncServer::bind(&glommio_addr, || {
        async |req: &mut simple_fastcgi_glommio::Request<'_>| {
            req.send_response(200, "text/plain", "Hello, world!", &[], false)
                .await
        }
    })?
    .with_settings(simple_fastcgi_glommio::Settings {
        executors: 1,
        spin_before_park: spin,
        handle_signals: false,
        // `SFCGI_SOCKET_RING=1` counts glommio with its socket ring on.
        ..simple_fastcgi_glommio::Settings::from_env()?
    });
    let handle = server.handle();
    let serving = thread::spawn(move || server.run());
    count("glommio", &glommio_addr, (requests, conns), serving, || {
        handle.shutdown()
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Counts a runtime's server, serving on `addr` in `serving`, then stops it
/// and prints its row.
fn count(
    runtime: &str,
    addr: &str,
    (requests, conns): (u64, u64),
    serving: thread::JoinHandle<io::Result<()>>,
    shutdown: impl FnOnce(),
) -> io::Result<()> {
    let counted = measure(addr, requests, conns);
    shutdown();
    let served = serving
        .join()
        .map_err(|_| io::Error::other(format!("the {runtime} server panicked")))?;
    report(runtime, requests, counted?);
    served
}

/// Allocations while `fcgi-load` sends `requests`, then five times as many.
fn measure(addr: &str, requests: u64, conns: u64) -> io::Result<(usize, usize)> {
    for _ in 0..100 {
        if std::path::Path::new(addr.trim_start_matches("unix:")).exists() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // Warm up: pools and buffers reach their steady size.
    load(addr, requests, conns)?;
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    load(addr, requests, conns)?;
    let short = ALLOCATIONS.load(Ordering::SeqCst) - before;
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    load(addr, 5 * requests, conns)?;
    let long = ALLOCATIONS.load(Ordering::SeqCst) - before;
    Ok((short, long))
}

/// Runs `fcgi-load` (next to this binary) for `requests` and checks it
/// saw no error.
fn load(addr: &str, requests: u64, conns: u64) -> io::Result<()> {
    let tool = std::env::current_exe()?.with_file_name("fcgi-load");
    let status = Command::new(&tool)
        .args(["--addr", addr, "--warmup", "0"])
        .args(["--requests", &requests.to_string()])
        .args(["--conns", &conns.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|error| io::Error::other(format!("{}: {error}", tool.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fcgi-load failed: {status}")))
    }
}

fn report(runtime: &str, requests: u64, (short, long): (usize, usize)) {
    let extra = long.saturating_sub(short) as f64 / (4 * requests) as f64;
    println!("| {runtime} | {extra:.3} | {short} | {long} |");
}
