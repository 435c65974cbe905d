//! The core allocates nothing: parsing a whole nginx-shaped request and
//! framing its response, counted by a global allocator that tallies
//! allocations per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use simple_fastcgi_core::{Config, Connection, Event, Output, Params, http};
use simple_fastcgi_tests::wire::{nginx_params, nginx_request};

/// Counts the calling thread's allocations, then defers to the system
/// allocator.
struct Counting;

thread_local! {
    // `const` initialisation: reading the counter never allocates itself.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is a thread-local
// `Cell` that is never borrowed across a call.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Serves one request from `input` with a 4 KiB buffer window and returns
/// the bytes written; the caller's `sink` is preallocated.
fn serve(conn: &mut Connection, params: &mut Params, input: &[u8], sink: &mut Vec<u8>) -> usize {
    let mut body_len = 0;
    let mut output: Option<Output> = None;
    let mut pos = 0;
    loop {
        let window = &input[pos..input.len().min(pos + 4096)];
        let progress = conn.feed(window).expect("valid request");
        pos += progress.consumed;
        let idle = progress.consumed == 0 && progress.event.is_none();
        match progress.event {
            Some(Event::Begin { output: out, .. }) => {
                params.clear();
                output = Some(out);
            }
            Some(Event::Params { bytes, .. }) => params.feed(bytes).expect("fits"),
            Some(Event::ParamsEnd { .. }) => params.finish().expect("complete"),
            Some(Event::Stdin { bytes, .. }) => body_len += bytes.len(),
            Some(Event::StdinEnd { .. }) => {
                let mut out = output.take().expect("begun");
                let mut head = [0u8; 256];
                let n = http::encode_head(&mut head, 200, "text/html", &[("X-Request", "1")])
                    .expect("fits");
                let page = params.get("REQUEST_URI").expect("sent by nginx");
                for part in [&head[..n], page, &[b'x'; 70_000][..]] {
                    for frame in out.stdout(part) {
                        for piece in frame.parts() {
                            sink.extend_from_slice(piece);
                        }
                    }
                }
                let end = conn.end_request(out, 0);
                sink.extend_from_slice(end.as_bytes());
                return body_len;
            }
            _ => {}
        }
        sink.extend_from_slice(conn.pending_output());
        let n = conn.pending_output().len();
        conn.advance_output(n);
        assert!(!idle, "request ended early");
    }
}

#[test]
fn parsing_and_framing_allocate_nothing() {
    let body = vec![b'b'; 10_000];
    let input = nginx_request(1, &body);
    // Everything that may allocate is made before counting starts.
    let mut params: Box<Params> = Box::default();
    let mut conn: Box<Connection> = Box::new(Connection::new(Config::new()));
    let mut sink = Vec::with_capacity(1 << 20);

    let before = allocations();
    for _ in 0..100 {
        sink.clear();
        let body_len = serve(&mut conn, &mut params, &input, &mut sink);
        assert_eq!(body_len, body.len());
    }
    let during = allocations() - before;

    assert_eq!(params.len(), nginx_params().len());
    assert!(sink.len() > 70_000, "the response was framed");
    assert_eq!(during, 0, "the core allocated {during} times");
}

#[test]
fn the_counter_counts() {
    // The assertion above could fail: an allocation is seen.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert_eq!(allocations() - before, 1);
    drop(v);
}
