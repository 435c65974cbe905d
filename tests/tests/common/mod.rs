//! The integration suite both runtimes must pass, on the wire, byte for
//! byte: example apps started on fd 0 the way spawn-fcgi does, checked with
//! the raw client. Each test file calls these for its runtime.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a module shared by test files: each uses part of it"
)]

pub mod overload;

use std::thread;
use std::time::Duration;

use simple_fastcgi_core::{ProtocolStatus, RecordType, Role};
use simple_fastcgi_tests::app::{App, Transport};
use simple_fastcgi_tests::client::{Client, unknown_type};
use simple_fastcgi_tests::wire::{Wire, nginx_params, pattern};

/// What the hello examples answer.
pub const HELLO: &[u8] =
    b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!";

/// The runtime under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// simple-fastcgi-std.
    Std,
    /// simple-fastcgi-glommio.
    Glommio,
    /// simple-fastcgi-glommio with its socket ring on
    /// (`Settings::socket_ring`, `SFCGI_SOCKET_RING=1`).
    GlommioRing,
}

impl Runtime {
    /// The example binary for `name` on this runtime.
    pub fn app(self, name: &str) -> &'static str {
        match (self, name) {
            (Runtime::Std, "hello") => "hello",
            (Runtime::Std, "echo") => "echo",
            (Runtime::Std, "mirror") => "mirror",
            (Runtime::Std, "redirect") => "redirect",
            (Runtime::Std, "dir-listing") => "dir-listing-sync",
            (Runtime::Std, "authorizer") => "authorizer",
            (Runtime::Glommio | Runtime::GlommioRing, "hello") => "hello-async",
            (Runtime::Glommio | Runtime::GlommioRing, "echo") => "echo-async",
            (Runtime::Glommio | Runtime::GlommioRing, "mirror") => "mirror-async",
            (Runtime::Glommio | Runtime::GlommioRing, "redirect") => "redirect-async",
            (Runtime::Glommio | Runtime::GlommioRing, "dir-listing") => "dir-listing",
            (Runtime::Glommio | Runtime::GlommioRing, "authorizer") => "authorizer-async",
            _ => panic!("no {name} example"),
        }
    }

    /// Starts the example `name` on this runtime with `env` added.
    pub fn spawn(self, name: &str, transport: Transport, env: &[(&str, &str)]) -> App {
        self.spawn_limited(name, transport, env, None)
    }

    /// [`Runtime::spawn`], with an open-file limit.
    pub fn spawn_limited(
        self,
        name: &str,
        transport: Transport,
        env: &[(&str, &str)],
        max_files: Option<u32>,
    ) -> App {
        let mut env = env.to_vec();
        if self == Runtime::GlommioRing {
            env.push((simple_fastcgi_glommio::SOCKET_RING_ENV, "1"));
        }
        App::spawn_limited(self.app(name), transport, &env, max_files)
    }
}

fn both_transports(rt: Runtime, test: impl Fn(&App)) {
    for transport in [Transport::Tcp, Transport::Unix] {
        let app = rt.spawn("hello", transport, &[]);
        test(&app);
    }
}

pub fn get_values_reports_the_real_limits(rt: Runtime) {
    both_transports(rt, |app| {
        let mut client = Client::connect(app.addr()).unwrap();
        let values = client
            .get_values(&[
                "FCGI_MAX_CONNS",
                "FCGI_MAX_REQS",
                "FCGI_MPXS_CONNS",
                "NOT_A_VARIABLE",
            ])
            .unwrap();
        // std: one request per connection, a worker per request; glommio:
        // 16 multiplexed requests on each of 1024 connections.
        let (max_reqs, mpxs) = match rt {
            Runtime::Std => (
                simple_fastcgi_std::Settings::default().workers.to_string(),
                "0",
            ),
            Runtime::Glommio | Runtime::GlommioRing => ((1024 * 16).to_string(), "1"),
        };
        assert_eq!(
            values,
            [
                ("FCGI_MAX_CONNS".to_string(), "1024".to_string()),
                ("FCGI_MAX_REQS".to_string(), max_reqs),
                ("FCGI_MPXS_CONNS".to_string(), mpxs.to_string()),
            ]
        );
        // The connection goes on serving requests.
        let response = client
            .request(1, true, &[("REQUEST_METHOD", "GET")], b"")
            .unwrap();
        assert_eq!(response.stdout, HELLO);
    });
}

pub fn unknown_management_type_gets_unknown_type(rt: Runtime) {
    let app = rt.spawn("hello", Transport::Tcp, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    client
        .send_wire(&Wire::new().record(RecordType::Unknown(0x42), 0, b"?"))
        .unwrap();
    let record = client.read_record().unwrap().unwrap();
    assert_eq!(
        record.content,
        [0x42, 0, 0, 0, 0, 0, 0, 0],
        "{{FCGI_UNKNOWN_TYPE, 0, {{0x42}}}}"
    );
    assert_eq!(unknown_type(&record), Some(RecordType::Unknown(0x42)));
}

pub fn unknown_role_gets_unknown_role(rt: Runtime) {
    let app = rt.spawn("hello", Transport::Unix, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    client
        .send_wire(
            &Wire::new()
                .begin(1, Role::Unknown(7), true)
                .params(1, &[])
                .stdin(1, b""),
        )
        .unwrap();
    let response = client.read_response(1).unwrap();
    assert_eq!(response.protocol_status, Some(ProtocolStatus::UnknownRole));
    assert!(response.stdout.is_empty() && !response.stdout_ended);
    // Then a normal request on the same connection.
    let response = client.request(2, true, &[], b"").unwrap();
    assert_eq!(response.stdout, HELLO);
}

pub fn hundreds_of_requests_on_one_kept_connection(rt: Runtime) {
    both_transports(rt, |app| {
        let mut client = Client::connect(app.addr()).unwrap();
        let params = nginx_params();
        for i in 0..500u16 {
            let id = i % 5 + 1;
            let response = client.request(id, true, &params, b"").unwrap();
            assert_eq!(response.stdout, HELLO);
            assert!(response.stdout_ended);
            assert_eq!(
                response.protocol_status,
                Some(ProtocolStatus::RequestComplete)
            );
            assert_eq!(response.app_status, 0);
        }
    });
}

pub fn without_keep_conn_the_app_closes_the_connection(rt: Runtime) {
    let app = rt.spawn("hello", Transport::Tcp, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    let response = client.request(1, false, &[], b"").unwrap();
    assert_eq!(response.stdout, HELLO);
    assert!(client.is_closed_by_peer());
}

/// A web server that sends a whole kept-connection request and closes its
/// side in the same breath: the request is answered, and the end, which
/// arrives with the request's last bytes, closes the connection at once,
/// not after the idle timeout.
pub fn a_request_followed_by_a_half_close_is_answered_then_closed(rt: Runtime) {
    both_transports(rt, |app| {
        for _ in 0..20 {
            let mut client = Client::connect(app.addr()).unwrap();
            client.set_timeout(Duration::from_secs(5)).unwrap();
            let wire = Wire::new()
                .begin(1, Role::Responder, true)
                .params(1, &nginx_params())
                .stdin(1, b"");
            client.send_wire(&wire).unwrap();
            client.shutdown_write().unwrap();
            let response = client.read_response(1).unwrap();
            assert_eq!(response.stdout, HELLO);
            assert!(
                client.is_closed_by_peer(),
                "the connection stayed open after the web server's end"
            );
        }
    });
}

/// A web server that writes a request's empty STDIN only after its params
/// (Caddy does, in a write of its own): a handler that answers at the end
/// of the params finishes first, and the app must not close the
/// connection under that last write, or the web server's write fails
/// (a broken pipe on a Unix socket, a reset on TCP) and it answers 502.
/// The app lingers: the write goes through, then the connection closes.
pub fn stdin_sent_after_the_answer_is_taken_before_the_close(rt: Runtime) {
    let app = rt.spawn("hello", Transport::Unix, &[]);
    for _ in 0..5 {
        let mut client = Client::connect(app.addr()).unwrap();
        client.set_timeout(Duration::from_secs(5)).unwrap();
        let head = Wire::new()
            .begin(1, Role::Responder, false)
            .params(1, &nginx_params());
        client.send_wire(&head).unwrap();
        let response = client.read_response(1).unwrap();
        assert_eq!(response.stdout, HELLO);
        // Time for an app that closes at once to have closed.
        thread::sleep(Duration::from_millis(50));
        client
            .send_wire(&Wire::new().stdin(1, b""))
            .expect("the STDIN sent after the answer is taken, not refused");
        client.shutdown_write().unwrap();
        assert!(client.is_closed_by_peer());
    }
}

/// A request refused for its unknown role, without KEEP_CONN, whose params
/// and STDIN the web server writes only after the refusal came: the app
/// takes them before it closes (the core still expects the refused
/// request's streams), or those writes fail with a broken pipe. The 4 MiB
/// of STDIN are more than the socket buffers hold, so they go through
/// only if the app reads them.
pub fn input_of_a_refused_request_is_taken_before_the_close(rt: Runtime) {
    let app = rt.spawn("hello", Transport::Unix, &[]);
    for _ in 0..5 {
        let mut client = Client::connect(app.addr()).unwrap();
        client.set_timeout(Duration::from_secs(5)).unwrap();
        client
            .send_wire(&Wire::new().begin(1, Role::Unknown(7), false))
            .unwrap();
        let response = client.read_response(1).unwrap();
        assert_eq!(response.protocol_status, Some(ProtocolStatus::UnknownRole));
        // Time for an app that closes at once to have closed.
        thread::sleep(Duration::from_millis(50));
        let rest = Wire::new()
            .params(1, &nginx_params())
            .stdin(1, &vec![b'x'; 4 << 20]);
        client
            .send_wire(&rest)
            .expect("the refused request's input taken, not refused");
        client.shutdown_write().unwrap();
        assert!(client.is_closed_by_peer());
    }
}

/// How a runtime's server and its handle are reached, for
/// [`fileno_names_the_listening_socket_until_it_closes`].
pub struct FilenoApi<S, H> {
    /// A server on the listener (it need not answer anything).
    pub make: fn(std::net::TcpListener) -> S,
    pub handle: fn(&S) -> H,
    pub fileno: fn(&S) -> std::os::fd::RawFd,
    pub handle_fileno: fn(&H) -> std::os::fd::RawFd,
    /// Serves until shut down, blocking.
    pub serve: fn(&S) -> std::io::Result<()>,
    pub shutdown: fn(&H),
}

/// `fileno()` names the listening socket while it is open, on the server
/// and its handles, and is -1 once the socket is closed: after a shutdown
/// (with the server still there), and when a server that never served is
/// dropped (its handle still there).
pub fn fileno_names_the_listening_socket_until_it_closes<S, H>(api: FilenoApi<S, H>)
where
    S: Send + Sync + 'static,
{
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = listener.as_raw_fd();
    let server = std::sync::Arc::new((api.make)(listener));
    let handle = (api.handle)(&server);
    assert_eq!(
        ((api.fileno)(&server), (api.handle_fileno)(&handle)),
        (fd, fd)
    );
    let serving = {
        let server = std::sync::Arc::clone(&server);
        let serve = api.serve;
        thread::spawn(move || serve(&server))
    };
    assert_eq!((api.handle_fileno)(&handle), fd, "open while serving");
    (api.shutdown)(&handle);
    serving.join().unwrap().unwrap();
    assert_eq!(
        ((api.fileno)(&server), (api.handle_fileno)(&handle)),
        (-1, -1),
        "the server is still there, its socket is not"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = listener.as_raw_fd();
    let server = (api.make)(listener);
    let handle = (api.handle)(&server);
    assert_eq!((api.handle_fileno)(&handle), fd);
    drop(server);
    assert_eq!(
        (api.handle_fileno)(&handle),
        -1,
        "the socket went with the server"
    );
}

/// A server bound to the Unix socket `path` (answering "ok") serves, keeps
/// the socket file while it does, and removes it once `stop` has shut it
/// down and waited for it to return.
pub fn a_bound_unix_socket_is_served_then_removed(path: &std::path::Path, stop: impl FnOnce()) {
    let addr = simple_fastcgi_tests::client::Addr::Unix(path.to_path_buf());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Client::connect(&addr).is_err() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        let mut client = Client::connect(&addr).unwrap();
        assert_eq!(client.request(1, false, &[], b"").unwrap().body(), b"ok");
        thread::sleep(Duration::from_millis(50));
        assert!(path.exists(), "the socket file stays while serving");
    }
    stop();
    assert!(!path.exists(), "the socket file is removed at shutdown");
    assert!(Client::connect(&addr).is_err());
}

pub fn input_fed_one_byte_at_a_time(rt: Runtime) {
    let app = rt.spawn("mirror", Transport::Unix, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    let body = pattern(3000);
    let wire = Wire::new()
        .begin(9, Role::Responder, true)
        .stream(
            RecordType::Params,
            9,
            &simple_fastcgi_tests::wire::encode_pairs(
                nginx_params()
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            ),
            7,
        )
        .stream(RecordType::Stdin, 9, &body, 100);
    client.send_in_pieces(wire.as_bytes(), 1).unwrap();
    let response = client.read_response(9).unwrap();
    assert_eq!(response.body(), &body[..]);
    assert_eq!(response.app_status, 0);
}

/// A response head longer than the room kept for heads (1 KiB in the
/// glommio runtime) goes out whole, and short ones around it too.
pub fn long_and_short_response_heads_go_out_whole(rt: Runtime) {
    let app = rt.spawn("redirect", Transport::Unix, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    for (id, len) in [(1u16, 10usize), (2, 3000), (3, 1000), (4, 20)] {
        let target = format!("/{}", "t".repeat(len));
        let query = format!("to={target}");
        let response = client
            .request(id, true, &[("QUERY_STRING", &query)], b"")
            .unwrap();
        assert_eq!(response.status(), 302, "target of {len} bytes");
        let head = response.head();
        let location = format!("Location: {target}");
        assert!(
            head.split("\r\n").any(|line| line == location),
            "target of {len} bytes: {head:?}"
        );
        assert_eq!(response.app_status, 0);
    }
}

pub fn large_params_fit_and_too_large_params_get_431(rt: Runtime) {
    let app = rt.spawn("echo", Transport::Tcp, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    let cookie = "c".repeat(40 * 1024);
    let response = client
        .request(
            1,
            true,
            &[("HTTP_COOKIE", &cookie), ("REQUEST_METHOD", "GET")],
            b"",
        )
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: serde_json_value::Value = serde_json_value::from_slice(response.body());
    assert_eq!(json.get("HTTP_COOKIE").map(String::len), Some(cookie.len()));

    let huge = "h".repeat(70 * 1024);
    let response = client
        .request(2, true, &[("HTTP_COOKIE", &huge)], b"")
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(response.body(), b"431 Request Header Fields Too Large\r\n");
    assert_eq!(response.app_status, 1);
    // The connection still serves.
    let response = client
        .request(3, true, &[("REQUEST_METHOD", "GET")], b"")
        .unwrap();
    assert_eq!(response.status(), 200);

    let many: Vec<(String, String)> = (0..300).map(|i| (format!("P{i}"), String::new())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let response = client.request(4, true, &many, b"").unwrap();
    assert_eq!(response.status(), 431);
}

pub fn abort_mid_body_ends_the_request(rt: Runtime) {
    let app = rt.spawn("mirror", Transport::Unix, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    client
        .send_wire(
            &Wire::new()
                .begin(1, Role::Responder, true)
                .params(1, &[])
                .record(RecordType::Stdin, 1, b"partial body"),
        )
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    client.send_wire(&Wire::new().abort(1)).unwrap();
    let response = client.read_response(1).unwrap();
    assert_eq!(
        response.protocol_status,
        Some(ProtocolStatus::RequestComplete)
    );
    assert_eq!(response.app_status, 1, "the handler's read failed: aborted");
    // The connection is kept and serves the next request.
    let response = client.request(2, true, &[], b"next").unwrap();
    assert_eq!(response.body(), b"next");
}

pub fn bad_input_closes_that_connection_and_a_fresh_one_works(rt: Runtime) {
    let app = rt.spawn("hello", Transport::Tcp, &[]);
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x02, 0x01, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00][..],
        &[
            0x01, 0x01, 0x00, 0x01, 0x00, 0x07, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0,
        ][..],
    ] {
        let mut bad = Client::connect(app.addr()).unwrap();
        bad.send(garbage).unwrap();
        assert!(bad.is_closed_by_peer(), "closed after {garbage:?}");
        let mut good = Client::connect(app.addr()).unwrap();
        assert_eq!(good.request(1, false, &[], b"").unwrap().stdout, HELLO);
    }
    // Stdin before the params ended, and a truncated header then close.
    let mut bad = Client::connect(app.addr()).unwrap();
    bad.send_wire(
        &Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Stdin, 1, b"x"),
    )
    .unwrap();
    assert!(bad.is_closed_by_peer());
    let bad = Client::connect(app.addr()).unwrap();
    drop(bad);
    let mut good = Client::connect(app.addr()).unwrap();
    assert_eq!(good.request(1, true, &[], b"").unwrap().stdout, HELLO);
}

pub fn large_bodies_round_trip(rt: Runtime) {
    let app = rt.spawn("mirror", Transport::Unix, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    for size in [0usize, 1, 65535, 65536, 3 * 1024 * 1024 + 7] {
        let body = pattern(size);
        let response = client.request(1, true, &[], &body).unwrap();
        assert_eq!(response.body().len(), size);
        assert!(response.body() == &body[..], "body of {size} bytes differs");
    }
}

pub fn client_gone_mid_response_costs_one_connection(rt: Runtime) {
    let app = rt.spawn("mirror", Transport::Tcp, &[]);
    let body = vec![b'z'; 8 * 1024 * 1024];
    let mut client = Client::connect(app.addr()).unwrap();
    client
        .send_wire(
            &Wire::new()
                .begin(1, Role::Responder, false)
                .params(1, &[])
                .stdin(1, &body),
        )
        .unwrap();
    let _first = client.read_record().unwrap();
    drop(client);
    thread::sleep(Duration::from_millis(200));
    let mut app = app;
    assert!(app.is_running(), "the process survived the broken pipe");
    let mut fresh = Client::connect(app.addr()).unwrap();
    assert_eq!(fresh.request(1, false, &[], b"ok").unwrap().body(), b"ok");
}

pub fn sigterm_lets_the_in_flight_request_finish_then_exits_0(rt: Runtime) {
    for signal in ["TERM", "INT", "USR1"] {
        let mut app = rt.spawn("mirror", Transport::Unix, &[]);
        let mut client = Client::connect(app.addr()).unwrap();
        client
            .send_wire(
                &Wire::new()
                    .begin(1, Role::Responder, true)
                    .params(1, &[])
                    .record(RecordType::Stdin, 1, b"first half, "),
            )
            .unwrap();
        thread::sleep(Duration::from_millis(200));
        app.signal(signal);
        thread::sleep(Duration::from_millis(200));
        assert!(app.is_running(), "waits for the in-flight request");
        // New connections are no longer served.
        client
            .send_wire(&Wire::new().stdin(1, b"second half"))
            .unwrap();
        let response = client.read_response(1).unwrap();
        assert_eq!(response.body(), b"first half, second half");
        let status = app
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("exits");
        assert!(status.success(), "SIG{signal}: {status:?}");
    }
}

/// SIGTERM while 12 connections have a request half sent and 4 more keep
/// sending whole requests (16 in all: the std runtime's default workers): every request the server had begun is answered
/// in full and correctly, none is cut off, new connections are refused,
/// and the process exits 0.
pub fn sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones(rt: Runtime) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut app = rt.spawn("mirror", Transport::Unix, &[]);
    let addr = app.addr().clone();
    let mut half_sent: Vec<Client> = (0..12)
        .map(|i| {
            let mut client = Client::connect(&addr).unwrap();
            client
                .send_wire(
                    &Wire::new()
                        .begin(1, Role::Responder, true)
                        .params(1, &nginx_params())
                        .record(RecordType::Stdin, 1, format!("first half {i}, ").as_bytes()),
                )
                .unwrap();
            client
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut client = Client::connect(&addr).unwrap();
                let mut answered = 0u32;
                for n in 0u32.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = pattern(1000 + (t * 1000 + n as usize) % 5000);
                    let wire = Wire::new()
                        .begin(1, Role::Responder, true)
                        .params(1, &nginx_params())
                        .stdin(1, &body);
                    if client.send_wire(&wire).is_err() {
                        break; // refused: closed before the request went out
                    }
                    let mut response = simple_fastcgi_tests::client::Response::default();
                    let mut got_any = false;
                    let ended = loop {
                        match client.read_record() {
                            Ok(Some(record)) => {
                                got_any = true;
                                response.absorb(1, record).unwrap();
                                if response.protocol_status.is_some() {
                                    break true;
                                }
                            }
                            Ok(None) | Err(_) => break false,
                        }
                    };
                    if !ended {
                        assert!(!got_any, "loader {t}: request {n} was cut off mid-response");
                        break; // refused before the server began it
                    }
                    assert_eq!(response.body(), &body[..], "loader {t}: request {n}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    app.signal("TERM");
    thread::sleep(Duration::from_millis(300));
    assert!(app.is_running(), "waits for the in-flight requests");
    match Client::connect(&addr) {
        Err(_) => {}
        Ok(mut late) => {
            let _ = late.send_wire(
                &Wire::new()
                    .begin(1, Role::Responder, false)
                    .params(1, &[])
                    .stdin(1, b""),
            );
            assert!(
                late.is_closed_by_peer(),
                "a connection after SIGTERM was served"
            );
        }
    }
    for (i, client) in half_sent.iter_mut().enumerate() {
        client
            .send_wire(&Wire::new().stdin(1, format!("second half {i}").as_bytes()))
            .unwrap();
        let response = client.read_response(1).unwrap();
        assert_eq!(
            response.body(),
            format!("first half {i}, second half {i}").as_bytes()
        );
    }
    stop.store(true, Ordering::SeqCst);
    for loader in loaders {
        let answered = loader.join().expect("a loader failed");
        assert!(answered > 0, "each loader was answered before the shutdown");
    }
    let status = app
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("exits once the in-flight requests are done");
    assert!(status.success(), "{status:?}");
}

pub fn web_server_addrs_is_enforced_for_tcp(rt: Runtime) {
    let refused = rt.spawn(
        "hello",
        Transport::Tcp,
        &[("FCGI_WEB_SERVER_ADDRS", "10.9.8.7,::2")],
    );
    let mut client = Client::connect(refused.addr()).unwrap();
    let _ = client.send_wire(
        &Wire::new()
            .begin(1, Role::Responder, false)
            .params(1, &[])
            .stdin(1, b""),
    );
    assert!(client.is_closed_by_peer(), "127.0.0.1 is not allowed");

    let allowed = rt.spawn(
        "hello",
        Transport::Tcp,
        &[("FCGI_WEB_SERVER_ADDRS", "10.9.8.7, 127.0.0.1")],
    );
    let mut client = Client::connect(allowed.addr()).unwrap();
    assert_eq!(client.request(1, false, &[], b"").unwrap().stdout, HELLO);

    let mut invalid = rt.spawn(
        "hello",
        Transport::Tcp,
        &[("FCGI_WEB_SERVER_ADDRS", "not-an-ip")],
    );
    let status = invalid
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("exits");
    assert!(
        !status.success(),
        "an unreadable allow-list is an error, not allow-all"
    );
}

pub fn many_concurrent_clients(rt: Runtime) {
    let app = rt.spawn("echo", Transport::Tcp, &[]);
    let addr = app.addr().clone();
    let threads: Vec<_> = (0..40)
        .map(|t| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut client = Client::connect(&addr).unwrap();
                for i in 0..25 {
                    let value = format!("{t}-{i}");
                    let response = client.request(1, true, &[("X", &value)], b"").unwrap();
                    let text = String::from_utf8_lossy(response.body()).into_owned();
                    assert!(text.contains(&format!("\"X\":\"{value}\"")), "{text}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// For a stop past the shutdown timeout, against a server whose handler
/// reads the whole body and sends it back: eight connections kept between
/// requests, and eight whose request waits for the rest of its body.
pub fn kept_and_waiting_clients(addr: &simple_fastcgi_tests::client::Addr) -> Vec<Client> {
    let kept = (0..8).map(|_| {
        let mut client = Client::connect(addr).unwrap();
        assert_eq!(client.request(1, true, &[], b"x").unwrap().body(), b"x");
        client
    });
    let waiting = (0..8).map(|_| {
        let mut client = Client::connect(addr).unwrap();
        client
            .send_wire(
                &Wire::new()
                    .begin(1, Role::Responder, true)
                    .params(1, &[])
                    .record(RecordType::Stdin, 1, b"part of a body"),
            )
            .unwrap();
        client
    });
    kept.chain(waiting).collect()
}

/// Reads a connection to its end (at most five seconds between bytes):
/// whether it ended, closed or reset, rather than timing out.
pub fn ends(client: &mut Client) -> bool {
    client.set_timeout(Duration::from_secs(5)).unwrap();
    loop {
        match client.read_record() {
            Ok(Some(_)) => continue,
            Ok(None) => return true,
            Err(error) => {
                return matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                );
            }
        }
    }
}

/// A minimal JSON object reader for flat string maps (the echo apps' output).
mod serde_json_value {
    pub(crate) type Value = std::collections::HashMap<String, String>;

    pub(crate) fn from_slice(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("a JSON object of strings")
    }
}
