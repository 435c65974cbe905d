//! The soak: a long mixed load against each runtime's `mirror` example —
//! kept connections, a new connection per request, 64 KiB bodies, requests
//! aborted mid-body — with every response checked, and the server's RSS at
//! the end within 5 % of its RSS after the first quarter of the run (at
//! least 10,000 requests). Pools and worker stacks touch their pages only
//! when first used, and how many are in use at once depends on timing: so
//! a burst of more clients than the soak has (and more than the std
//! runtime has workers) first takes every pool to its bound, and only then
//! is RSS measured. What grows after that is a leak.
//!
//! `cargo test` runs a short version (`SOAK_REQUESTS`, default 40,000 per
//! runtime); `scripts/soak.sh` runs the full million in release mode.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use simple_fastcgi_core::{ProtocolStatus, RecordType, Role};
use simple_fastcgi_tests::app::{MALLOC_RETURNS_MEMORY, Transport};
use simple_fastcgi_tests::client::{Addr, Client};
use simple_fastcgi_tests::wire::{Wire, nginx_params, pattern};

mod common;

use common::Runtime;

/// Requests per runtime unless `SOAK_REQUESTS` says otherwise.
const DEFAULT_REQUESTS: u64 = 40_000;

/// RSS is first measured after a quarter of the run, and at least this
/// many requests...
const WARM: u64 = 10_000;

/// ...and at the end may exceed that by at most this fraction. (After the
/// burst, runs on a noisy 2-CPU machine grew by 1.6 % at the most.)
const RSS_GROWTH: f64 = 0.05;

/// Client threads, each with its own kept connection.
const CLIENTS: u64 = 4;

/// Clients of the burst before the soak, and the requests of each: more at
/// once than the soak ever has, and than the std runtime's 16 workers.
const BURST_CLIENTS: u64 = 24;
const BURST_REQUESTS: u64 = 100;

#[test]
fn std_soak() {
    soak(Runtime::Std);
}

#[test]
fn glommio_soak() {
    soak(Runtime::Glommio);
}

#[test]
fn glommio_socket_ring_soak() {
    soak(Runtime::GlommioRing);
}

fn soak(rt: Runtime) {
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS)
        .max(2 * WARM);
    let app = rt.spawn("mirror", Transport::Unix, MALLOC_RETURNS_MEMORY);
    let addr = app.addr().clone();
    let burst_done = Arc::new(AtomicU64::new(0));
    let burst: Vec<_> = (0..BURST_CLIENTS)
        .map(|c| {
            let addr = addr.clone();
            let burst_done = Arc::clone(&burst_done);
            thread::spawn(move || run_client(c, &addr, BURST_REQUESTS, &burst_done))
        })
        .collect();
    join_clients(rt, "burst", burst);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = addr.clone();
            let done = Arc::clone(&done);
            let failed = Arc::clone(&failed);
            thread::spawn(move || {
                let result = run_client(c, &addr, total / CLIENTS, &done);
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                result
            })
        })
        .collect();
    // RSS once the warm-up count is passed, then at the end.
    let warm = WARM.max(total / 4);
    while done.load(Ordering::SeqCst) < warm && !failed.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(5));
    }
    let warm_rss = app.rss_kib().expect("the server's RSS");
    // Samples along the way, for the log: a leak climbs steadily, a pool
    // settling levels off.
    let mut samples = Vec::new();
    for tenth in 1..10 {
        while done.load(Ordering::SeqCst) < total / 10 * tenth && !failed.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        samples.push(app.rss_kib().unwrap_or(0));
    }
    eprintln!("{rt:?}: RSS at each tenth of the run (KiB): {samples:?}");
    join_clients(rt, "soak", clients);
    thread::sleep(Duration::from_millis(200));
    let end_rss = app.rss_kib().expect("the server's RSS");
    let served = done.load(Ordering::SeqCst);
    eprintln!(
        "{rt:?}: {served} requests in {:?}; RSS {warm_rss} KiB after {warm}, {end_rss} KiB at the end",
        started.elapsed()
    );
    #[allow(clippy::cast_precision_loss, reason = "RSS in KiB is far below 2^52")]
    let limit = warm_rss as f64 * (1.0 + RSS_GROWTH);
    #[allow(clippy::cast_precision_loss, reason = "as above")]
    let end = end_rss as f64;
    assert!(
        end <= limit,
        "{rt:?}: RSS grew from {warm_rss} KiB to {end_rss} KiB over {served} requests"
    );
}

/// Waits for the `what` clients, failing the test if one failed.
fn join_clients(rt: Runtime, what: &str, clients: Vec<thread::JoinHandle<io::Result<()>>>) {
    for (c, client) in clients.into_iter().enumerate() {
        match client.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("{rt:?}: {what} client {c} failed: {error}"),
            Err(_) => panic!("{rt:?}: {what} client {c} panicked"),
        }
    }
}

/// One client's share: a kept connection for most requests, a fresh one
/// for every 10th, a 64 KiB body for every 20th, an abort mid-body for
/// every 25th.
fn run_client(c: u64, addr: &Addr, requests: u64, done: &AtomicU64) -> io::Result<()> {
    let params = nginx_params();
    let big = pattern(64 * 1024);
    let mut kept = Client::connect(addr)?;
    for n in 0..requests {
        let id = u16::try_from(1 + n % 100).unwrap_or(1);
        if n % 25 == 24 {
            // Abort mid-body: the handler's read fails, END_REQUEST comes,
            // and the connection stays usable.
            kept.send_wire(
                &Wire::new()
                    .begin(id, Role::Responder, true)
                    .params(id, &params)
                    .record(RecordType::Stdin, id, b"half a body")
                    .abort(id),
            )?;
            let response = kept.read_response(id)?;
            expect(
                response.protocol_status == Some(ProtocolStatus::RequestComplete),
                c,
                n,
                "END_REQUEST after an abort",
            )?;
        } else {
            let body: Vec<u8> = if n % 20 == 19 {
                big.clone()
            } else {
                format!("client {c} request {n}").into_bytes()
            };
            let response = if n % 10 == 9 {
                Client::connect(addr)?.request(id, false, &params, &body)?
            } else {
                kept.request(id, true, &params, &body)?
            };
            expect(response.status() == 200, c, n, "status 200")?;
            expect(response.body() == &body[..], c, n, "the body echoed")?;
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

fn expect(condition: bool, c: u64, n: u64, what: &str) -> io::Result<()> {
    if condition {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "client {c} request {n}: wrong {what}"
        )))
    }
}
