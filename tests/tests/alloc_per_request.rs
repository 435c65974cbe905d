//! No heap allocation per request in steady state: the std runtime's server
//! runs in this process under a counting global allocator, serves thousands
//! of keep-conn requests from a client that allocates nothing itself, and
//! the count over the measured requests stays at a constant that does not
//! grow with their number.
//!
//! The glommio runtime reuses its slots, read blocks, params arenas and
//! output buffers and runs requests in their connection's task, but glommio
//! 0.9 allocates every time an executor waits and sleeps, about 7 blocks,
//! which with one client at a time means per request. Its test holds it to
//! that: anything the runtime allocated per request on top would show.
//! Under load it hardly sleeps: `benches/src/bin/alloc-count.rs` counts
//! both runtimes with several connections. See the README.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use simple_fastcgi_tests::wire::nginx_request;

/// Counts every allocation in the process, then defers to the system.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made on this thread: what `the_counter_counts` looks at,
    /// so threads of the other test's server that are still winding down
    /// cannot disturb it.
    static MINE: Cell<usize> = const { Cell::new(0) };
}

/// Counts an allocation, process-wide and for this thread.
fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down has no counter left.
    let _ = MINE.try_with(|mine| mine.set(mine.get() + 1));
}

fn mine() -> usize {
    MINE.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The count is process-wide: the servers are measured one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends `request` and reads records until END_REQUEST, into `buf`, without
/// allocating; returns the response's byte count.
fn exchange(stream: &mut impl ReadWrite, request: &[u8], buf: &mut [u8]) -> usize {
    stream.write_all(request).expect("send");
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).expect("receive");
        assert!(n > 0, "connection closed");
        filled += n;
        // END_REQUEST is the last record: type 3, 8 content bytes.
        if filled >= 16 && buf[filled - 16] == 1 && buf[filled - 15] == 3 {
            return filled;
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Allocations while `rounds` requests are served on one kept connection.
fn allocations_over(stream: &mut impl ReadWrite, rounds: usize) -> usize {
    let request = nginx_request(1, b"");
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..500 {
        exchange(stream, &request, &mut buf);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..rounds {
        let n = exchange(stream, &request, &mut buf);
        assert!(buf[..n].windows(13).any(|w| w == b"Hello, world!"));
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn std_runtime_allocates_nothing_per_request() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = simple_fastcgi_std::Server::from_listener(
        listener,
        |req: &mut simple_fastcgi_std::Request<'_>| {
            req.send_response(200, "text/plain", "Hello, world!", &[], false)
        },
    )
    .unwrap()
    .with_settings(simple_fastcgi_std::Settings {
        handle_signals: false,
        ..simple_fastcgi_std::Settings::default()
    });
    let handle = server.handle();
    let serving = thread::spawn(move || server.serve_forever());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let few = allocations_over(&mut stream, 1_000);
    let many = allocations_over(&mut stream, 5_000);
    handle.shutdown();
    drop(stream);
    serving.join().unwrap().unwrap();
    assert!(
        many <= few + 5 && many < 50,
        "allocations: {few} over 1000 requests, {many} over 5000"
    );
}

#[test]
fn glommio_runtime_allocates_only_for_glommio_s_sleeps() {
    // One client at a time: the executor sleeps once per request, and
    // glommio 0.9 allocates up to 7 times for that (two preemption timers,
    // a linked pair of ring entries, the wait on the socket); here 5.8-6.4
    // per request. While the sweeper slept on a glommio timer it was
    // 8.6-9.6 here (12 in a release build).
    let per_request = glommio_allocations_per_request(false);
    assert!(
        per_request < 7.5,
        "{per_request:.2} allocations per request"
    );
}

#[test]
fn glommio_with_its_socket_ring_allocates_only_for_glommio_s_sleeps() {
    // With the socket ring the executor sleeps on the ring's eventfd, which
    // glommio reads through a buffered file: besides the sleep's own
    // allocations, a read allocates its source and its buffer, and the
    // driver boxes its wait. Here 6.0 per request (5.6 without the ring);
    // `alloc-count 30000 1`, a release build under fcgi-load, counts 14.7
    // (7.0 without): there the eventfd, which the kernel also signals for
    // the driver's own completions, often ends a sleep at once, and each
    // such wake-up takes another read. None is the runtime's own: its
    // operation slots, and their room for sends of up to 4 KiB, are reused.
    let per_request = glommio_allocations_per_request(true);
    assert!(
        per_request < 10.0,
        "{per_request:.2} allocations per request"
    );
}

/// Allocations per request of a glommio hello server, one executor, one
/// client sending kept requests one at a time.
fn glommio_allocations_per_request(socket_ring: bool) -> f64 {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(error) = simple_fastcgi_glommio::check_environment(1) {
        panic!("the glommio runtime cannot run on this machine: {error}");
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = simple_fastcgi_glommio::AsyncServer::from_listener(listener, || {
        async |req: &mut simple_fastcgi_glommio::Request<'_>| {
            req.send_response(200, "text/plain", "Hello, world!", &[], false)
                .await
        }
    })
    .unwrap()
    .with_settings(simple_fastcgi_glommio::Settings {
        executors: 1,
        handle_signals: false,
        socket_ring,
        ..simple_fastcgi_glommio::Settings::default()
    });
    let handle = server.handle();
    let serving = thread::spawn(move || server.run());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let requests = 5_000;
    let allocations = allocations_over(&mut stream, requests);
    handle.shutdown();
    drop(stream);
    serving.join().unwrap().unwrap();
    let per_request = allocations as f64 / requests as f64;
    eprintln!(
        "socket ring {socket_ring}: {per_request:.2} allocations per request ({allocations} over {requests})"
    );
    per_request
}

#[test]
fn the_counter_counts() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = (ALLOCATIONS.load(Ordering::SeqCst), mine());
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > before.0);
    assert_eq!(mine(), before.1 + 1);
    drop(v);
    // Unix sockets need no allocation either way; this only shows the
    // client side of `exchange` is allocation-free (counted on this
    // thread alone).
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let before = mine();
    a.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    b.read_exact(&mut byte).unwrap();
    assert_eq!(mine(), before);
}
