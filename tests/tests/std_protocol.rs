//! The std runtime on the wire, checked byte for byte with the raw client:
//! example apps started on fd 0 the way spawn-fcgi does, and in-process
//! servers for handler behaviour (panics, errors, aborts).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use simple_fastcgi_core::{ProtocolStatus, RecordType, Role};
use simple_fastcgi_std::{Request, Server, ServerHandle, Settings};
use simple_fastcgi_tests::app::{App, Transport};
use simple_fastcgi_tests::client::{Addr, Client};
use simple_fastcgi_tests::wire::Wire;

mod common;

use common::Runtime;

/// An in-process server on a free TCP port, shut down on drop.
struct InProcess {
    addr: Addr,
    handle: ServerHandle,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    fn start<H: simple_fastcgi_std::Handler>(handler: H, settings: Settings) -> InProcess {
        // The library's bind: a listen backlog of LISTEN_BACKLOG, not 128.
        let listener = simple_fastcgi_std::Listener::bind("127.0.0.1:0").unwrap();
        let addr = Addr::Tcp(listener.local_addr());
        let settings = Settings {
            handle_signals: false,
            ..settings
        };
        let server = Server::from_listener(listener, handler)
            .unwrap()
            .with_settings(settings);
        let handle = server.handle();
        let thread = thread::spawn(move || server.serve_forever());
        InProcess {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> std::io::Result<()> {
        self.handle.shutdown();
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

/// An in-process server whose handler answers `ok`.
fn ok_server(settings: Settings) -> InProcess {
    InProcess::start(
        |req: &mut Request<'_>| req.send_response(200, "", "ok", &[], false),
        settings,
    )
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[test]
fn second_request_while_one_is_active_gets_cant_mpx_conn() {
    let app = App::spawn("mirror", Transport::Tcp, &[]);
    let mut client = Client::connect(app.addr()).unwrap();
    client
        .send_wire(&Wire::new().begin(1, Role::Responder, true).params(1, &[]))
        .unwrap();
    client
        .send_wire(&Wire::new().begin(2, Role::Responder, true).params(2, &[]))
        .unwrap();
    let refused = client.read_response(2).unwrap();
    assert_eq!(refused.protocol_status, Some(ProtocolStatus::CantMpxConn));
    client.send_wire(&Wire::new().stdin(1, b"one")).unwrap();
    let response = client.read_response(1).unwrap();
    assert_eq!(response.body(), b"one");
}

#[test]
fn handler_panic_gives_500_and_the_server_keeps_serving() {
    let server = InProcess::start(
        |req: &mut Request<'_>| {
            if req.param("PANIC").is_some() {
                req.write_all(b"Status: 200 OK\r\n\r\nnot sent")?;
                panic!("handler exploded");
            }
            req.send_response(200, "text/plain", "fine", &[], false)
        },
        Settings::default(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    let response = client.request(1, true, &[("PANIC", "1")], b"").unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.body(), b"500 Internal Server Error\r\n");
    assert_eq!(response.app_status, 101);
    let response = client.request(2, true, &[], b"").unwrap();
    assert_eq!(response.body(), b"fine");
}

#[test]
fn handler_error_after_sending_keeps_what_was_sent() {
    let server = InProcess::start(
        |req: &mut Request<'_>| {
            req.send_response(200, "text/plain", "partial", &[], true)?;
            Err(std::io::Error::other("database went away"))
        },
        Settings::default(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    let response = client.request(1, true, &[], b"").unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), b"partial");
    assert_eq!(response.app_status, 1);
}

#[test]
fn aborted_is_seen_while_the_handler_does_not_read() {
    let seen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&seen);
    let server = InProcess::start(
        move |req: &mut Request<'_>| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if req.aborted() {
                    flag.store(true, Ordering::SeqCst);
                    return req.send_response(499, "", (), &[], false);
                }
                thread::sleep(Duration::from_millis(10));
            }
            req.send_response(200, "", "never aborted", &[], false)
        },
        Settings::default(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    client
        .send_wire(
            &Wire::new()
                .begin(1, Role::Responder, true)
                .params(1, &[])
                .stdin(1, b""),
        )
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    client.send_wire(&Wire::new().abort(1)).unwrap();
    let response = client.read_response(1).unwrap();
    assert!(seen.load(Ordering::SeqCst));
    assert_eq!(response.status(), 499);
}

#[test]
fn idle_connections_do_not_hold_workers() {
    let server = ok_server(Settings {
        workers: 2,
        ..Settings::default()
    });
    // More idle connections (some mid-request) than workers.
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut client = Client::connect(&server.addr).unwrap();
        if i % 2 == 0 {
            client
                .send_wire(&Wire::new().begin(1, Role::Responder, true))
                .unwrap();
        }
        idle.push(client);
    }
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut fresh = Client::connect(&server.addr).unwrap();
    assert_eq!(fresh.request(1, true, &[], b"").unwrap().body(), b"ok");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(idle);
}

#[test]
fn filter_role_reads_data_after_stdin() {
    let server = InProcess::start(
        |req: &mut Request<'_>| {
            assert_eq!(req.role(), Role::Filter);
            let stdin = req.read_all()?;
            let mut data = Vec::new();
            req.data().read_to_end(&mut data)?;
            let reply = format!(
                "stdin={} data={}",
                String::from_utf8_lossy(&stdin),
                String::from_utf8_lossy(&data)
            );
            req.send_response(200, "", reply, &[], false)
        },
        Settings::default(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    client
        .send_wire(
            &Wire::new()
                .begin(1, Role::Filter, true)
                .params(1, &[("FCGI_DATA_LENGTH", "9")])
                .stdin(1, b"form")
                .stream(RecordType::Data, 1, b"file data", 4),
        )
        .unwrap();
    let response = client.read_response(1).unwrap();
    assert_eq!(response.body(), b"stdin=form data=file data");
}

#[test]
fn stderr_stream_and_redirects() {
    let server = InProcess::start(
        |req: &mut Request<'_>| {
            req.write_err(b"a warning\n")?;
            match req.param("TARGET") {
                Some(target) => req.send_redirect(target),
                None => req.send_response(200, "", "", &[("X-Bad", "a\r\nInjected: yes")], false),
            }
        },
        Settings::default(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    let response = client
        .request(1, true, &[("TARGET", "/elsewhere?x=1")], b"")
        .unwrap();
    assert_eq!(
        response.stdout,
        b"Status: 302 Found\r\nLocation: /elsewhere?x=1\r\n\r\n"
    );
    assert_eq!(response.stderr, b"a warning\n");
    let response = client
        .request(2, true, &[("TARGET", "https://example.com/")], b"")
        .unwrap();
    assert_eq!(
        response.stdout,
        b"Status: 302 Found\r\nLocation: https://example.com/\r\n\r\n"
    );
    // Header injection is refused: the handler's error becomes a 500.
    let response = client.request(3, true, &[], b"").unwrap();
    assert_eq!(response.status(), 500);
    assert!(!String::from_utf8_lossy(&response.stdout).contains("Injected"));
}

#[test]
fn service_actions_are_called_regularly() {
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);
    impl simple_fastcgi_std::Handler for Counting {
        fn handle(&self, req: &mut Request<'_>) -> std::io::Result<()> {
            req.send_response(200, "", "ok", &[], false)
        }
        fn service_actions(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _server = InProcess::start(
        Counting(Arc::clone(&calls)),
        Settings {
            service_interval: Duration::from_millis(20),
            ..Settings::default()
        },
    );
    thread::sleep(Duration::from_millis(400));
    assert!(
        calls.load(Ordering::SeqCst) >= 5,
        "{} calls",
        calls.load(Ordering::SeqCst)
    );
}

#[test]
fn stdin_sent_after_the_answer_is_taken_before_the_close() {
    common::stdin_sent_after_the_answer_is_taken_before_the_close(Runtime::Std);
}

#[test]
fn input_of_a_refused_request_is_taken_before_the_close() {
    common::input_of_a_refused_request_is_taken_before_the_close(Runtime::Std);
}

#[test]
fn fileno_names_the_listening_socket_until_it_closes() {
    common::fileno_names_the_listening_socket_until_it_closes(common::FilenoApi {
        make: |listener| {
            let hello = |req: &mut Request<'_>| req.send_response(200, "", "hi", &[], false);
            Server::from_listener(listener, hello)
                .unwrap()
                .with_settings(Settings {
                    handle_signals: false,
                    ..Settings::default()
                })
        },
        handle: Server::handle,
        fileno: Server::fileno,
        handle_fileno: ServerHandle::fileno,
        serve: Server::serve_forever,
        shutdown: ServerHandle::shutdown,
    });
}

#[test]
fn web_server_addrs_over_ipv6() {
    let start = |allowed: &str| {
        let listener =
            TcpListener::bind("[::1]:0").expect("IPv6 loopback (::1) is needed for this test");
        let addr = Addr::Tcp(listener.local_addr().unwrap().to_string());
        let settings = Settings {
            handle_signals: false,
            web_server_addrs: Some(simple_fastcgi_std::WebServerAddrs::parse(allowed).unwrap()),
            ..Settings::default()
        };
        let server = Server::from_listener(listener, |req: &mut Request<'_>| {
            req.send_response(200, "", "v6", &[], false)
        })
        .unwrap()
        .with_settings(settings);
        let handle = server.handle();
        let thread = thread::spawn(move || server.serve_forever());
        (addr, handle, thread)
    };
    let (addr, handle, thread) = start("::1");
    let mut client = Client::connect(&addr).unwrap();
    assert_eq!(client.request(1, false, &[], b"").unwrap().body(), b"v6");
    handle.shutdown();
    thread.join().unwrap().unwrap();

    let (addr, handle, thread) = start("::2, 127.0.0.1");
    let mut client = Client::connect(&addr).unwrap();
    let _ = client.send_wire(
        &Wire::new()
            .begin(1, Role::Responder, false)
            .params(1, &[])
            .stdin(1, b""),
    );
    assert!(client.is_closed_by_peer(), "::1 is not in the list");
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

#[test]
fn a_silent_web_server_cannot_hold_a_request() {
    let server = InProcess::start(
        |req: &mut Request<'_>| {
            let body = req.read_all()?;
            req.send_response(200, "", body, &[], false)
        },
        Settings {
            read_timeout: Duration::from_millis(300),
            ..Settings::default()
        },
    );
    let mut client = Client::connect(&server.addr).unwrap();
    client
        .send_wire(
            &Wire::new()
                .begin(1, Role::Responder, true)
                .params(1, &[])
                .record(RecordType::Stdin, 1, b"then silence"),
        )
        .unwrap();
    let start = Instant::now();
    let response = client.read_response(1).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(response.status(), 500, "the handler's read timed out");
    assert_eq!(response.app_status, 1);
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = ok_server(Settings {
        idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    });
    let mut client = Client::connect(&server.addr).unwrap();
    assert_eq!(client.request(1, true, &[], b"").unwrap().body(), b"ok");
    let start = Instant::now();
    assert!(client.is_closed_by_peer());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn max_requests_per_connection() {
    let server = ok_server(Settings {
        max_requests_per_conn: Some(3),
        ..Settings::default()
    });
    let mut client = Client::connect(&server.addr).unwrap();
    for id in 1..=3 {
        assert_eq!(client.request(id, true, &[], b"").unwrap().body(), b"ok");
    }
    assert!(client.is_closed_by_peer(), "closed after the third request");
}

#[test]
fn connections_beyond_max_conns_are_closed_not_left_waiting() {
    let server = ok_server(Settings {
        max_conns: 3,
        ..Settings::default()
    });
    let mut held: Vec<Client> = (0..3)
        .map(|_| Client::connect(&server.addr).unwrap())
        .collect();
    for client in &mut held {
        // Each is served, so each is counted.
        assert_eq!(client.request(1, true, &[], b"").unwrap().body(), b"ok");
    }
    let mut extra = Client::connect(&server.addr).unwrap();
    let start = Instant::now();
    assert!(extra.is_closed_by_peer());
    assert!(start.elapsed() < Duration::from_secs(2));
    // Once one goes away, a new connection is served again.
    drop(held.pop());
    thread::sleep(Duration::from_millis(200));
    let mut again = Client::connect(&server.addr).unwrap();
    assert_eq!(again.request(1, true, &[], b"").unwrap().body(), b"ok");
}

// The suite both runtimes pass (tests/tests/common).

#[test]
fn get_values_reports_the_real_limits() {
    common::get_values_reports_the_real_limits(Runtime::Std);
}

#[test]
fn unknown_management_type_gets_unknown_type() {
    common::unknown_management_type_gets_unknown_type(Runtime::Std);
}

#[test]
fn unknown_role_gets_unknown_role() {
    common::unknown_role_gets_unknown_role(Runtime::Std);
}

#[test]
fn long_and_short_response_heads_go_out_whole() {
    common::long_and_short_response_heads_go_out_whole(Runtime::Std);
}

#[test]
fn hundreds_of_requests_on_one_kept_connection() {
    common::hundreds_of_requests_on_one_kept_connection(Runtime::Std);
}

#[test]
fn a_request_followed_by_a_half_close_is_answered_then_closed() {
    common::a_request_followed_by_a_half_close_is_answered_then_closed(Runtime::Std);
}

#[test]
fn without_keep_conn_the_app_closes_the_connection() {
    common::without_keep_conn_the_app_closes_the_connection(Runtime::Std);
}

#[test]
fn input_fed_one_byte_at_a_time() {
    common::input_fed_one_byte_at_a_time(Runtime::Std);
}

#[test]
fn large_params_fit_and_too_large_params_get_431() {
    common::large_params_fit_and_too_large_params_get_431(Runtime::Std);
}

#[test]
fn abort_mid_body_ends_the_request() {
    common::abort_mid_body_ends_the_request(Runtime::Std);
}

#[test]
fn bad_input_closes_that_connection_and_a_fresh_one_works() {
    common::bad_input_closes_that_connection_and_a_fresh_one_works(Runtime::Std);
}

#[test]
fn large_bodies_round_trip() {
    common::large_bodies_round_trip(Runtime::Std);
}

#[test]
fn client_gone_mid_response_costs_one_connection() {
    common::client_gone_mid_response_costs_one_connection(Runtime::Std);
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    common::sigterm_lets_the_in_flight_request_finish_then_exits_0(Runtime::Std);
}

#[test]
fn web_server_addrs_is_enforced_for_tcp() {
    common::web_server_addrs_is_enforced_for_tcp(Runtime::Std);
}

#[test]
fn many_concurrent_clients() {
    common::many_concurrent_clients(Runtime::Std);
}

#[test]
fn a_thousand_hostile_connections_do_not_starve_a_fresh_client() {
    let server = ok_server(Settings {
        max_conns: common::overload::MAX_CONNS,
        ..Settings::default()
    });
    common::overload::thousand_hostile_connections_do_not_starve_a_fresh_client(&server.addr);
}

#[test]
fn sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones() {
    common::sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones(Runtime::Std);
}

#[test]
fn a_bound_unix_socket_serves_and_is_removed_at_shutdown() {
    let dir = simple_fastcgi_tests::app::TempDir::new("std-bind");
    let path = dir.path().join("app.sock");
    let server = Server::bind(
        &format!("unix:{}", path.display()),
        |req: &mut Request<'_>| req.send_response(200, "", "ok", &[], false),
    )
    .unwrap()
    .with_settings(Settings {
        handle_signals: false,
        ..Settings::default()
    });
    let handle = server.handle();
    let serving = thread::spawn(move || server.serve_forever());
    common::a_bound_unix_socket_is_served_then_removed(&path, || {
        handle.shutdown();
        serving.join().unwrap().unwrap();
    });
}

#[test]
fn silent_connections_time_out_without_stalling_others() {
    let server = ok_server(Settings {
        read_timeout: common::overload::SILENT_READ_TIMEOUT,
        ..Settings::default()
    });
    common::overload::silent_connections_time_out_without_stalling_others(&server.addr);
}

#[test]
fn out_of_descriptors_neither_spins_nor_stops_serving() {
    common::overload::out_of_descriptors_neither_spins_nor_stops_serving(Runtime::Std);
}

#[test]
fn lingering_closes_do_not_hold_up_fresh_clients() {
    let server = ok_server(Settings::default());
    common::overload::lingering_closes_do_not_hold_up_fresh_clients(&server.addr);
}

#[test]
fn a_stop_past_the_shutdown_timeout_closes_every_connection() {
    // Kept connections between requests close as the shutdown begins;
    // requests still waiting for their bodies when the shutdown timeout
    // passes are cut: every web server sees its connection end once the
    // server has returned, not only when the process exits.
    let mut server = InProcess::start(
        |req: &mut Request<'_>| {
            let body = req.read_all()?;
            req.send_response(200, "", body, &[], false)
        },
        Settings {
            shutdown_timeout: Duration::from_millis(500),
            ..Settings::default()
        },
    );
    let mut clients = common::kept_and_waiting_clients(&server.addr);
    thread::sleep(Duration::from_millis(100));
    let stopped = server.stop();
    assert!(stopped.is_ok(), "the server stops cleanly: {stopped:?}");
    for client in &mut clients {
        assert!(common::ends(client), "the connection is closed");
    }
}
