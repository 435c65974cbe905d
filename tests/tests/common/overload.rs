//! Overload: a thousand connections that hold the server's attention
//! without finishing a request (idle, slow at one byte per 50 ms, or
//! half-open), a fresh client that must still be answered within 2 s, and
//! connections beyond the limit that must be refused promptly.

use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use simple_fastcgi_core::{ProtocolStatus, Role};
use simple_fastcgi_tests::client::{Addr, Client};
use simple_fastcgi_tests::stream::Stream;
use simple_fastcgi_tests::wire::{Wire, nginx_request};

/// Connections of each hostile kind.
pub const IDLE: usize = 334;
pub const SLOW: usize = 333;
pub const HALF_OPEN: usize = 333;

/// The `max_conns` the server under test must be started with: room for
/// the hostile thousand and the fresh clients, and a limit the test then
/// goes past.
pub const MAX_CONNS: usize = 1100;

/// The bound for a fresh client among the thousand.
const FRESH_WITHIN: Duration = Duration::from_secs(2);

/// The slow connections' pace.
const SLOW_BYTE_EVERY: Duration = Duration::from_millis(50);

/// Raises this process's open-file limit to what the test needs (the
/// client and, in process, the server side of every connection), or fails
/// saying why.
pub fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively
    // borrowed struct.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit: {}", io::Error::last_os_error());
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files; the hard limit is {} (raise it with ulimit -Hn)",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: setrlimit reads one valid rlimit struct.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// A fresh client's request (on a new connection, `keep_conn` as given),
/// answered `ok` within [`FRESH_WITHIN`]; returns how long it took.
fn fresh_client_is_answered(addr: &Addr, i: usize, keep_conn: bool) -> Duration {
    let started = Instant::now();
    let mut client = Client::connect(addr).expect("a fresh client connects");
    client.set_timeout(FRESH_WITHIN).expect("timeout");
    let response = client
        .request(1, keep_conn, &[("REQUEST_METHOD", "GET")], b"")
        .unwrap_or_else(|e| panic!("fresh client {i} was not answered: {e}"));
    assert_eq!(response.body(), b"ok", "fresh client {i}");
    let took = started.elapsed();
    assert!(took < FRESH_WITHIN, "fresh client {i} took {took:?}");
    took
}

/// Writes one byte at a time to each slow connection until stopped.
fn drive_slow(mut slow: Vec<Stream>, stop: Arc<AtomicBool>) -> usize {
    let request = nginx_request(1, b"");
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) && sent < request.len() {
        for stream in &mut slow {
            match stream.write(&request[sent..=sent]) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("a slow connection failed: {e}"),
            }
        }
        sent += 1;
        thread::sleep(SLOW_BYTE_EVERY);
    }
    sent
}

fn raw(addr: &Addr) -> Stream {
    let addr = match addr {
        Addr::Tcp(addr) => addr.clone(),
        Addr::Unix(path) => format!("unix:{}", path.display()),
    };
    Stream::connect(&addr).expect("connect a hostile connection")
}

/// The scenario, against a server on `addr` started with [`MAX_CONNS`]
/// and a handler that answers `ok`.
pub fn thousand_hostile_connections_do_not_starve_a_fresh_client(addr: &Addr) {
    raise_fd_limit(8192);
    let idle: Vec<Stream> = (0..IDLE).map(|_| raw(addr)).collect();
    let slow: Vec<Stream> = (0..SLOW)
        .map(|_| {
            let stream = raw(addr);
            stream.set_nonblocking(true).expect("nonblocking");
            stream
        })
        .collect();
    // BEGIN_REQUEST and part of the params.
    let half_open_request = nginx_request(1, b"")[..48].to_vec();
    let half_open: Vec<Stream> = (0..HALF_OPEN)
        .map(|_| {
            let mut stream = raw(addr);
            stream
                .write_all(&half_open_request)
                .expect("a partial request");
            stream.shutdown(Shutdown::Write).expect("half-close");
            stream
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || drive_slow(slow, stop))
    };
    // Let the slow ones get past their BEGIN_REQUEST (16 bytes), so they
    // hold requests that have begun while the fresh clients come.
    thread::sleep(SLOW_BYTE_EVERY * 20);

    // Fresh clients, one after another, while the thousand hold on.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        slowest = slowest.max(fresh_client_is_answered(addr, i, i % 2 == 0));
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the slowest of 20 fresh clients among 1000 hostile connections: {slowest:?}");

    // Past the limit: more connections than MAX_CONNS minus the ones still
    // open. Each is answered, or refused at once (closed, or
    // FCGI_OVERLOADED); none is left waiting.
    let extra: Vec<Client> = (0..MAX_CONNS - IDLE - SLOW + 100)
        .map(|_| Client::connect(addr).expect("connect past the limit"))
        .collect();
    let (mut served, mut refused) = (0, 0);
    let mut held = Vec::with_capacity(extra.len());
    for mut client in extra {
        client.set_timeout(Duration::from_secs(5)).expect("timeout");
        let sent = client.send_wire(
            &Wire::new()
                .begin(1, Role::Responder, true)
                .params(1, &[])
                .stdin(1, b""),
        );
        match (sent, client.read_response(1)) {
            (_, Ok(response)) if response.protocol_status == Some(ProtocolStatus::Overloaded) => {
                refused += 1;
            }
            (_, Ok(response)) => {
                assert_eq!(response.body(), b"ok");
                served += 1;
            }
            (_, Err(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("a connection past the limit was left waiting")
            }
            (_, Err(_)) => refused += 1,
        }
        // Held open, so the count stays past the limit.
        held.push(client);
    }
    eprintln!("past the limit: {served} served, {refused} refused");
    assert!(
        refused >= 100,
        "at least the 100 past the limit were refused"
    );
    assert!(
        served <= MAX_CONNS - IDLE - SLOW,
        "more connections served than the limit allows: {served}"
    );

    stop.store(true, Ordering::SeqCst);
    let sent = driver.join().expect("the slow driver");
    assert!(sent > 30, "the slow connections sent {sent} bytes each");
    drop((idle, half_open, held));
}

/// Connections that go silent in the middle of a request: the server
/// started with [`SILENT_READ_TIMEOUT`] must close them when it passes,
/// without holding anyone else up while it does (closing must not wait on
/// a peer that sends nothing).
pub const SILENT_READ_TIMEOUT: Duration = Duration::from_millis(500);

/// The scenario for [`SILENT_READ_TIMEOUT`]: 300 connections send a
/// BEGIN_REQUEST and part of the params, then nothing.
pub fn silent_connections_time_out_without_stalling_others(addr: &Addr) {
    raise_fd_limit(4096);
    let partial = nginx_request(1, b"")[..48].to_vec();
    let mut silent: Vec<Client> = (0..300)
        .map(|_| {
            let mut client = Client::connect(addr).expect("connect");
            client.send(&partial).expect("a partial request");
            client
        })
        .collect();
    thread::sleep(SILENT_READ_TIMEOUT * 2);
    // They time out now, all at once; a fresh client is answered meanwhile.
    for i in 0..5 {
        fresh_client_is_answered(addr, i, false);
    }
    for (i, client) in silent.iter_mut().enumerate() {
        client.set_timeout(Duration::from_secs(5)).expect("timeout");
        assert!(
            client.is_closed_by_peer(),
            "silent connection {i} was not closed after the read timeout"
        );
    }
}

/// The server out of file descriptors: `App` started with `ulimit -n 48`
/// and more connections than that. accept(2) fails with EMFILE while the
/// listening socket stays readable; the server must not spin on it (a
/// busy loop would burn a whole CPU), and must serve again once
/// descriptors are free.
pub fn out_of_descriptors_neither_spins_nor_stops_serving(rt: super::Runtime) {
    use simple_fastcgi_tests::app::Transport;

    let app = rt.spawn_limited("hello", Transport::Unix, &[], Some(48));
    let addr = app.addr().clone();
    let mut first = Client::connect(&addr).expect("connect");
    assert_eq!(
        first.request(1, true, &[], b"").expect("served").stdout,
        super::HELLO
    );
    // More connections than descriptors: the rest wait in the backlog.
    let held: Vec<Stream> = (0..80).map(|_| raw(&addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let before = app.cpu_time().expect("cpu time");
    thread::sleep(Duration::from_secs(1));
    let used = app.cpu_time().expect("cpu time") - before;
    assert!(
        used < Duration::from_millis(500),
        "{rt:?}: {used:?} of CPU in one second while out of descriptors: a busy loop"
    );
    drop(held);
    // Descriptors free again: a new connection is served (give the server
    // a moment to close the dropped ones and resume accepting).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = Client::connect(&addr)
            .and_then(|mut client| {
                client.set_timeout(Duration::from_secs(2))?;
                client.request(1, false, &[], b"")
            })
            .is_ok_and(|response| response.stdout == super::HELLO);
        if answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{rt:?}: not serving again after descriptors were freed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    drop(first);
}

/// Requests whose bodies the handler never reads, with the web server
/// still sending when the answer is done: the server closes each with a
/// lingering close (reading and dropping until the sender stops, at most
/// `lingering_close`, 5 s). Forty such senders, trickling a byte every
/// 100 ms, must not hold up a fresh client for 2 s.
pub fn lingering_closes_do_not_hold_up_fresh_clients(addr: &Addr) {
    let mut start = nginx_request(1, b"")[..].to_vec();
    // nginx_request ends with the empty STDIN record: drop it, and send the
    // start of a body that goes on.
    start.truncate(start.len() - 8);
    start.extend_from_slice(
        &Wire::new()
            .record(simple_fastcgi_core::RecordType::Stdin, 1, &[b'b'; 1000])
            .into_bytes(),
    );
    // keep_conn off: the server closes once it has answered.
    start[10] = 0;
    let mut senders: Vec<Stream> = (0..40)
        .map(|_| {
            let mut stream = raw(addr);
            stream
                .write_all(&start)
                .expect("a request with a body that goes on");
            stream.set_nonblocking(true).expect("nonblocking");
            stream
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for stream in &mut senders {
                    // Errors are fine: the server may have closed by now.
                    let _ = stream.write(b"b");
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        fresh_client_is_answered(addr, i, false);
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    trickle.join().expect("the trickling thread");
}
