//! The glommio runtime on the wire: the suite both runtimes pass (example
//! apps on fd 0, the raw client), in-process servers for handler behaviour,
//! and what only this runtime does: multiplexed requests on one connection,
//! connections spread over executors.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use common::Runtime;
use futures_lite::future;
use simple_fastcgi_core::{ProtocolStatus, RecordType, Role};
use simple_fastcgi_glommio::{AsyncServer, Handler, Request, ServerHandle, Settings};
use simple_fastcgi_tests::client::{Addr, Client};
use simple_fastcgi_tests::wire::{Wire, pattern};

/// An in-process glommio server on a free TCP port, shut down on drop.
struct InProcess {
    addr: Addr,
    handle: ServerHandle,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    fn start<F, H>(factory: F, settings: Settings) -> InProcess
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: Handler,
    {
        if let Err(error) = simple_fastcgi_glommio::check_environment(settings.executors) {
            panic!("the glommio runtime cannot run on this machine: {error}");
        }
        // The library's bind: a listen backlog of LISTEN_BACKLOG, not 128.
        let listener = simple_fastcgi_glommio::Listener::bind("127.0.0.1:0").unwrap();
        let addr = Addr::Tcp(listener.local_addr());
        // `SFCGI_SOCKET_RING=1` runs the in-process servers with their
        // socket rings on too (`.ci/run` runs this file once more so).
        let from_env = Settings::from_env().expect("the test's environment");
        let settings = Settings {
            handle_signals: false,
            socket_ring: settings.socket_ring || from_env.socket_ring,
            ..settings
        };
        let server = AsyncServer::from_listener(listener, factory)
            .unwrap()
            .with_settings(settings);
        let handle = server.handle();
        let thread = thread::spawn(move || server.run());
        InProcess {
            addr,
            handle,
            thread: Some(thread),
        }
    }
}

/// An in-process server whose handler answers `ok`.
fn ok_server(settings: Settings) -> InProcess {
    InProcess::start(
        || async |req: &mut Request<'_>| req.send_response(200, "", "ok", &[], false).await,
        settings,
    )
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("the server thread");
            if !thread::panicking() {
                result.expect("the server stops cleanly");
            }
        }
    }
}

fn one_executor() -> Settings {
    Settings {
        executors: 1,
        ..Settings::default()
    }
}

// The suite both runtimes pass (tests/tests/common).

/// The example-app part of the suite again, with the socket ring on.
macro_rules! with_socket_ring {
    ($($test:ident),* $(,)?) => {
        mod socket_ring {
            use super::{Runtime, common};
            $(
                #[test]
                fn $test() {
                    common::$test(Runtime::GlommioRing);
                }
            )*
            #[test]
            fn out_of_descriptors_neither_spins_nor_stops_serving() {
                common::overload::out_of_descriptors_neither_spins_nor_stops_serving(
                    Runtime::GlommioRing,
                );
            }
        }
    };
}

with_socket_ring!(
    get_values_reports_the_real_limits,
    unknown_management_type_gets_unknown_type,
    unknown_role_gets_unknown_role,
    long_and_short_response_heads_go_out_whole,
    hundreds_of_requests_on_one_kept_connection,
    a_request_followed_by_a_half_close_is_answered_then_closed,
    without_keep_conn_the_app_closes_the_connection,
    input_fed_one_byte_at_a_time,
    large_params_fit_and_too_large_params_get_431,
    abort_mid_body_ends_the_request,
    bad_input_closes_that_connection_and_a_fresh_one_works,
    large_bodies_round_trip,
    client_gone_mid_response_costs_one_connection,
    sigterm_lets_the_in_flight_request_finish_then_exits_0,
    web_server_addrs_is_enforced_for_tcp,
    many_concurrent_clients,
    stdin_sent_after_the_answer_is_taken_before_the_close,
    input_of_a_refused_request_is_taken_before_the_close,
    sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones,
);

/// With the socket ring, a lone client's requests are answered as they
/// come, not when something else happens to wake the executor. (Made with
/// `DEFER_TASKRUN`, the ring's eventfd was signalled an RCU grace period
/// after the bytes came, about 15 ms on Linux 6.18, so every request of a
/// lone client waited that long when the app had a CPU to itself and the
/// client another; made with `COOP_TASKRUN`, an executor that found its
/// completions already posted slept on.) A bound on liveness, not a speed
/// target: answering the 100 requests takes about 35 ms here; waiting
/// 14 ms each, it took 1.4 s.
#[test]
fn socket_ring_answers_a_lone_client_without_waiting_for_a_wake_up() {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let allowed = sched_getaffinity(None).expect("this thread's CPUs");
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|&cpu| allowed.is_set(cpu))
        .collect();
    let (app_cpu, client_cpu) = match cpus[..] {
        [one] => {
            eprintln!(
                "!!! one CPU only: the app and its client share it, which may hide a late wake-up"
            );
            (one, one)
        }
        [first, second, ..] => (first, second),
        [] => panic!("no CPU to run on"),
    };
    let hello = simple_fastcgi_tests::app::example_bin("hello-async");
    let app_cpu = app_cpu.to_string();
    let app = simple_fastcgi_tests::app::App::spawn_bin(
        std::path::Path::new("taskset"),
        &["-c", &app_cpu, &hello.to_string_lossy()],
        simple_fastcgi_tests::app::Transport::Unix,
        &[(simple_fastcgi_glommio::SOCKET_RING_ENV, "1")],
        None,
    );
    let addr = app.addr().clone();
    let took = thread::spawn(move || {
        let mut on = CpuSet::new();
        on.set(client_cpu);
        sched_setaffinity(None, &on).expect("pin the client");
        let mut client = Client::connect(&addr).unwrap();
        let params = simple_fastcgi_tests::wire::nginx_params();
        // A pause before each request lets the executor fall asleep, as
        // it does between a lone client's requests: the time that counts
        // is how long it takes to wake for the next one.
        let mut waiting = Duration::ZERO;
        for _ in 0..100 {
            thread::sleep(Duration::from_millis(2));
            let started = Instant::now();
            let response = client.request(1, true, &params, b"").unwrap();
            waiting += started.elapsed();
            assert_eq!(response.stdout, common::HELLO);
        }
        waiting
    })
    .join()
    .expect("the client");
    assert!(
        took < Duration::from_millis(500),
        "100 requests of a lone client took {took:?} to answer: each waited for a wake-up"
    );
}

#[test]
fn get_values_reports_the_real_limits() {
    common::get_values_reports_the_real_limits(Runtime::Glommio);
}

#[test]
fn unknown_management_type_gets_unknown_type() {
    common::unknown_management_type_gets_unknown_type(Runtime::Glommio);
}

#[test]
fn unknown_role_gets_unknown_role() {
    common::unknown_role_gets_unknown_role(Runtime::Glommio);
}

#[test]
fn long_and_short_response_heads_go_out_whole() {
    common::long_and_short_response_heads_go_out_whole(Runtime::Glommio);
}

#[test]
fn hundreds_of_requests_on_one_kept_connection() {
    common::hundreds_of_requests_on_one_kept_connection(Runtime::Glommio);
}

#[test]
fn a_request_followed_by_a_half_close_is_answered_then_closed() {
    common::a_request_followed_by_a_half_close_is_answered_then_closed(Runtime::Glommio);
}

#[test]
fn without_keep_conn_the_app_closes_the_connection() {
    common::without_keep_conn_the_app_closes_the_connection(Runtime::Glommio);
}

#[test]
fn input_fed_one_byte_at_a_time() {
    common::input_fed_one_byte_at_a_time(Runtime::Glommio);
}

#[test]
fn large_params_fit_and_too_large_params_get_431() {
    common::large_params_fit_and_too_large_params_get_431(Runtime::Glommio);
}

#[test]
fn abort_mid_body_ends_the_request() {
    common::abort_mid_body_ends_the_request(Runtime::Glommio);
}

#[test]
fn bad_input_closes_that_connection_and_a_fresh_one_works() {
    common::bad_input_closes_that_connection_and_a_fresh_one_works(Runtime::Glommio);
}

#[test]
fn large_bodies_round_trip() {
    common::large_bodies_round_trip(Runtime::Glommio);
}

#[test]
fn client_gone_mid_response_costs_one_connection() {
    common::client_gone_mid_response_costs_one_connection(Runtime::Glommio);
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    common::sigterm_lets_the_in_flight_request_finish_then_exits_0(Runtime::Glommio);
}

#[test]
fn web_server_addrs_is_enforced_for_tcp() {
    common::web_server_addrs_is_enforced_for_tcp(Runtime::Glommio);
}

#[test]
fn many_concurrent_clients() {
    common::many_concurrent_clients(Runtime::Glommio);
}

// Handler behaviour, in process.

#[test]
fn handler_panic_gives_500_and_the_server_keeps_serving() {
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                if req.param("PANIC").is_some() {
                    req.write(b"Status: 200 OK\r\n\r\nnot sent").await?;
                    panic!("handler exploded");
                }
                req.send_response(200, "text/plain", "fine", &[], false)
                    .await
            }
        },
        one_executor(),
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
        || {
            async |req: &mut Request<'_>| {
                req.send_response(200, "text/plain", "partial", &[], true)
                    .await?;
                Err(std::io::Error::other("database went away"))
            }
        },
        one_executor(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    let response = client.request(1, true, &[], b"").unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), b"partial");
    assert_eq!(response.app_status, 1);
}

#[test]
fn the_handler_can_await_the_abort() {
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                let aborted = future::or(
                    async {
                        req.wait_aborted().await;
                        true
                    },
                    async {
                        glommio::timer::sleep(Duration::from_secs(10)).await;
                        false
                    },
                )
                .await;
                assert!(req.aborted() == aborted);
                let status = if aborted { 499 } else { 200 };
                req.send_response(status, "", (), &[], false).await
            }
        },
        one_executor(),
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
    let start = Instant::now();
    client.send_wire(&Wire::new().abort(1)).unwrap();
    let response = client.read_response(1).unwrap();
    assert_eq!(response.status(), 499);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn filter_role_reads_data_after_stdin() {
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                assert_eq!(req.role(), Role::Filter);
                let stdin = req.read_all().await?;
                let mut data = Vec::new();
                let mut buf = [0u8; 3];
                loop {
                    let n = req.read_data_into(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                let reply = format!(
                    "stdin={} data={}",
                    String::from_utf8_lossy(&stdin),
                    String::from_utf8_lossy(&data)
                );
                req.send_response(200, "", reply, &[], false).await
            }
        },
        one_executor(),
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
fn stderr_stream_redirects_and_refused_headers() {
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                req.write_err(b"a warning\n").await?;
                match req.param("TARGET").map(str::to_string) {
                    Some(target) => req.send_redirect(&target).await,
                    None => {
                        req.send_response(200, "", "", &[("X-Bad", "a\r\nInjected: yes")], false)
                            .await
                    }
                }
            }
        },
        one_executor(),
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
    let response = client.request(3, true, &[], b"").unwrap();
    assert_eq!(response.status(), 500);
    assert!(!String::from_utf8_lossy(&response.stdout).contains("Injected"));
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = ok_server(Settings {
        idle_timeout: Duration::from_millis(300),
        ..one_executor()
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
fn a_silent_web_server_cannot_hold_a_request() {
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                let body = req.read_all().await?;
                req.send_response(200, "", body, &[], false).await
            }
        },
        Settings {
            read_timeout: Duration::from_millis(300),
            ..one_executor()
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
fn max_requests_per_connection() {
    let server = ok_server(Settings {
        max_requests_per_conn: Some(3),
        ..one_executor()
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
        ..one_executor()
    });
    let mut held: Vec<Client> = (0..3)
        .map(|_| Client::connect(&server.addr).unwrap())
        .collect();
    for client in &mut held {
        assert_eq!(client.request(1, true, &[], b"").unwrap().body(), b"ok");
    }
    let mut extra = Client::connect(&server.addr).unwrap();
    let start = Instant::now();
    assert!(extra.is_closed_by_peer());
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(held.pop());
    thread::sleep(Duration::from_millis(200));
    let mut again = Client::connect(&server.addr).unwrap();
    assert_eq!(again.request(1, true, &[], b"").unwrap().body(), b"ok");
}

// Multiplexing.

/// Echoes `id=<ID> body=<body>`, after `SLEEP_MS` milliseconds when given.
fn echo_after_sleep() -> impl Fn() -> EchoSleep + Send + Sync + 'static {
    || EchoSleep
}

struct EchoSleep;

impl Handler for EchoSleep {
    async fn handle(&self, req: &mut Request<'_>) -> std::io::Result<()> {
        if let Some(ms) = req.param("SLEEP_MS").and_then(|ms| ms.parse().ok()) {
            let aborted = future::or(
                async {
                    req.wait_aborted().await;
                    true
                },
                async {
                    glommio::timer::sleep(Duration::from_millis(ms)).await;
                    false
                },
            )
            .await;
            if aborted {
                return req.send_response(499, "", (), &[], false).await;
            }
        }
        let body = req.read_all().await?;
        let reply = format!(
            "id={} body={}",
            req.request_id(),
            String::from_utf8_lossy(&body)
        );
        req.send_response(200, "", reply, &[], false).await
    }
}

#[test]
fn interleaved_requests_on_one_connection() {
    let server = InProcess::start(echo_after_sleep(), one_executor());
    let mut client = Client::connect(&server.addr).unwrap();
    // Three requests begun before any ends, their records interleaved.
    let mut wire = Wire::new();
    for id in [1u16, 2, 3] {
        wire = wire.begin(id, Role::Responder, true);
    }
    for id in [3u16, 1, 2] {
        wire = wire.params(id, &[("N", "x")]);
    }
    for (id, piece) in [(2u16, "b-"), (1, "a-"), (3, "c-"), (1, "a"), (2, "b")] {
        wire = wire.record(RecordType::Stdin, id, piece.as_bytes());
    }
    for id in [3u16, 2, 1] {
        wire = wire.record(RecordType::Stdin, id, b"");
    }
    client.send_wire(&wire).unwrap();
    let mut responses = client.read_responses(&[1, 2, 3]).unwrap();
    responses.sort_by_key(|(id, _)| *id);
    let bodies: Vec<String> = responses
        .iter()
        .map(|(_, r)| String::from_utf8_lossy(r.body()).into_owned())
        .collect();
    assert_eq!(bodies, ["id=1 body=a-a", "id=2 body=b-b", "id=3 body=c-"]);
    // And the connection serves on.
    assert_eq!(
        client.request(4, true, &[], b"d").unwrap().body(),
        b"id=4 body=d"
    );
}

#[test]
fn a_slow_request_beside_a_fast_one() {
    let server = InProcess::start(echo_after_sleep(), one_executor());
    let mut client = Client::connect(&server.addr).unwrap();
    let wire = Wire::new()
        .begin(1, Role::Responder, true)
        .params(1, &[("SLEEP_MS", "800")])
        .stdin(1, b"slow")
        .begin(2, Role::Responder, true)
        .params(2, &[])
        .stdin(2, b"fast");
    let start = Instant::now();
    client.send_wire(&wire).unwrap();
    let responses = client.read_responses(&[1, 2]).unwrap();
    assert_eq!(responses[0].0, 2, "the fast one ends first");
    assert_eq!(responses[0].1.body(), b"id=2 body=fast");
    assert_eq!(responses[1].1.body(), b"id=1 body=slow");
    assert!(start.elapsed() >= Duration::from_millis(700));
}

#[test]
fn abort_one_of_two_multiplexed_requests() {
    let server = InProcess::start(echo_after_sleep(), one_executor());
    let mut client = Client::connect(&server.addr).unwrap();
    let wire = Wire::new()
        .begin(1, Role::Responder, true)
        .params(1, &[("SLEEP_MS", "5000")])
        .stdin(1, b"")
        .begin(2, Role::Responder, true)
        .params(2, &[("SLEEP_MS", "300")])
        .stdin(2, b"kept");
    client.send_wire(&wire).unwrap();
    thread::sleep(Duration::from_millis(50));
    client.send_wire(&Wire::new().abort(1)).unwrap();
    let responses = client.read_responses(&[1, 2]).unwrap();
    assert_eq!(responses[0].0, 1, "the aborted one ends at once");
    assert_eq!(responses[0].1.status(), 499);
    assert_eq!(
        responses[0].1.protocol_status,
        Some(ProtocolStatus::RequestComplete)
    );
    assert_eq!(responses[1].1.body(), b"id=2 body=kept");
}

#[test]
fn requests_beyond_the_per_connection_limit_are_overloaded() {
    let server = InProcess::start(
        echo_after_sleep(),
        Settings {
            max_reqs_per_conn: 2,
            ..one_executor()
        },
    );
    let mut client = Client::connect(&server.addr).unwrap();
    let wire = Wire::new()
        .begin(1, Role::Responder, true)
        .begin(2, Role::Responder, true)
        .begin(3, Role::Responder, true);
    client.send_wire(&wire).unwrap();
    let refused = client.read_response(3).unwrap();
    assert_eq!(refused.protocol_status, Some(ProtocolStatus::Overloaded));
    client
        .send_wire(
            &Wire::new()
                .params(1, &[])
                .stdin(1, b"1")
                .params(2, &[])
                .stdin(2, b"2"),
        )
        .unwrap();
    let responses = client.read_responses(&[1, 2]).unwrap();
    assert_eq!(responses.len(), 2);
}

#[test]
fn a_request_that_does_not_read_holds_back_the_connection_not_memory() {
    // Request 1 waits before reading its 8 MiB body; the connection stops
    // reading once its buffers are full, so the sender is held back
    // instead of the server buffering everything.
    let server = InProcess::start(echo_after_sleep(), one_executor());
    let client = Client::connect(&server.addr).unwrap();
    let body = vec![b'x'; 8 * 1024 * 1024];
    let wire = Wire::new()
        .begin(1, Role::Responder, true)
        .params(1, &[("SLEEP_MS", "1500")])
        .stdin(1, &body);
    let mut writer = client;
    let start = Instant::now();
    writer.send_wire(&wire).unwrap();
    let sent_after = start.elapsed();
    assert!(
        sent_after >= Duration::from_millis(1000),
        "8 MiB went out in {sent_after:?}: the server buffered it"
    );
    let response = writer.read_response(1).unwrap();
    assert_eq!(response.body().len(), "id=1 body=".len() + body.len());
}

#[test]
fn both_executors_receive_connections() {
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                let id = req.executor().id().to_string();
                req.send_response(200, "", id, &[], false).await
            }
        },
        Settings {
            executors: 2,
            ..Settings::default()
        },
    );
    let addr = server.addr.clone();
    let seen: BTreeSet<String> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut ids = BTreeSet::new();
                for _ in 0..25 {
                    let mut client = Client::connect(&addr).unwrap();
                    let response = client.request(1, false, &[], b"").unwrap();
                    ids.insert(String::from_utf8_lossy(response.body()).into_owned());
                }
                ids
            })
        })
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(seen.len(), 2, "executors seen: {seen:?}");
}

#[test]
fn serve_forever_and_shutdown_awaited_on_executors() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Addr::Tcp(listener.local_addr().unwrap().to_string());
    let server = AsyncServer::from_listener(listener, || {
        async |req: &mut Request<'_>| req.send_response(200, "", "served", &[], false).await
    })
    .unwrap()
    .with_settings(Settings {
        handle_signals: false,
        ..one_executor()
    });
    let server = std::sync::Arc::new(server);
    let serving = {
        let server = std::sync::Arc::clone(&server);
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { server.serve_forever().await })
            .unwrap()
    };
    let mut client = Client::connect(&addr).unwrap();
    assert_eq!(client.request(1, true, &[], b"").unwrap().body(), b"served");
    assert_eq!(server.fileno(), server.handle().fileno());
    let stopping = {
        let server = std::sync::Arc::clone(&server);
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { server.shutdown().await })
            .unwrap()
    };
    stopping.join().unwrap();
    serving.join().unwrap().unwrap();
    assert!(server.handle().is_shutting_down());
}

#[test]
fn stdin_sent_after_the_answer_is_taken_before_the_close() {
    common::stdin_sent_after_the_answer_is_taken_before_the_close(Runtime::Glommio);
}

#[test]
fn input_of_a_refused_request_is_taken_before_the_close() {
    common::input_of_a_refused_request_is_taken_before_the_close(Runtime::Glommio);
}

#[test]
fn fileno_names_the_listening_socket_until_it_closes() {
    common::fileno_names_the_listening_socket_until_it_closes(common::FilenoApi {
        make: |listener| {
            let factory =
                || async |req: &mut Request<'_>| req.send_response(200, "", "hi", &[], false).await;
            AsyncServer::from_listener(listener, factory)
                .unwrap()
                .with_settings(Settings {
                    handle_signals: false,
                    ..one_executor()
                })
        },
        handle: AsyncServer::handle,
        fileno: AsyncServer::fileno,
        handle_fileno: ServerHandle::fileno,
        serve: AsyncServer::run,
        shutdown: ServerHandle::shutdown,
    });
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
    common::sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones(Runtime::Glommio);
}

#[test]
fn a_bound_unix_socket_serves_and_is_removed_at_shutdown() {
    let dir = simple_fastcgi_tests::app::TempDir::new("glommio-bind");
    let path = dir.path().join("app.sock");
    let server = AsyncServer::bind(&format!("unix:{}", path.display()), || {
        async |req: &mut Request<'_>| req.send_response(200, "", "ok", &[], false).await
    })
    .unwrap()
    .with_settings(Settings {
        handle_signals: false,
        ..Settings::default()
    });
    let handle = server.handle();
    let serving = thread::spawn(move || server.run());
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
    common::overload::out_of_descriptors_neither_spins_nor_stops_serving(Runtime::Glommio);
}

#[test]
fn an_unread_large_body_does_not_stall_the_kept_connection() {
    // The handler answers without reading its body. Chunks of that body
    // already handed to the request must let go of their read blocks when
    // the request ends; otherwise the connection's reader waits for room
    // that never comes, and the next request hangs until the idle timeout.
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                // Long enough for the reader to fill every read block the
                // connection may hold with this body.
                glommio::timer::sleep(Duration::from_millis(100)).await;
                req.send_response(200, "", "ok", &[], false).await
            }
        },
        one_executor(),
    );
    let mut client = Client::connect(&server.addr).unwrap();
    client.set_timeout(Duration::from_secs(5)).unwrap();
    for round in 0..3u16 {
        let id = 1 + round;
        let body = vec![b'u'; 1024 * 1024];
        let response = client.request(id, true, &[], &body).unwrap();
        assert_eq!(response.body(), b"ok", "round {round}");
        let response = client.request(9, true, &[], b"").unwrap();
        assert_eq!(response.body(), b"ok", "round {round}: the next request");
    }
}

#[test]
fn lingering_closes_do_not_hold_up_fresh_clients() {
    let server = ok_server(Settings::default());
    common::overload::lingering_closes_do_not_hold_up_fresh_clients(&server.addr);
}

#[test]
fn an_executor_that_panics_stops_the_server_instead_of_leaving_it_half_up() {
    if let Err(error) = simple_fastcgi_glommio::check_environment(2) {
        panic!("the glommio runtime cannot run on this machine: {error}");
    }
    let listener = simple_fastcgi_glommio::Listener::bind("127.0.0.1:0").unwrap();
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let factory = {
        let made = std::sync::Arc::clone(&made);
        move || {
            // The second executor's handler cannot be made.
            let n = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(n == 0, "no handler for executor {n}");
            async |req: &mut Request<'_>| req.send_response(200, "", "ok", &[], false).await
        }
    };
    let server = AsyncServer::from_listener(listener, factory)
        .unwrap()
        .with_settings(Settings {
            executors: 2,
            handle_signals: false,
            ..Settings::default()
        });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(server.run());
    });
    let result = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("run returns once an executor failed");
    assert!(result.is_err(), "run reports the failure: {result:?}");
}

// The socket ring's limits (`Settings::socket_ring_buffers`) and its end.

/// An in-process mirror (the body back) whose executor reads and writes
/// through a socket ring of `buffers` receive buffers.
fn mirror_on_a_socket_ring(settings: Settings) -> InProcess {
    InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                let body = req.read_all().await?;
                req.send_response(200, "", body, &[], false).await
            }
        },
        Settings {
            socket_ring: true,
            ..settings
        },
    )
}

#[test]
fn reads_that_find_every_ring_buffer_taken_go_through_glommio() {
    // One receive buffer for sixteen connections streaming bodies at once:
    // most recvs find it taken (ENOBUFS) and read through glommio instead,
    // holding no read block while they wait. Every body comes back whole.
    let server = mirror_on_a_socket_ring(Settings {
        socket_ring_buffers: 1,
        ..one_executor()
    });
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let addr = server.addr.clone();
            thread::spawn(move || {
                let mut client = Client::connect(&addr).unwrap();
                for i in 0..6 {
                    let body = pattern(150_000 + 1000 * t + i);
                    let response = client.request(1, true, &[], &body).unwrap();
                    assert_eq!(response.status(), 200);
                    assert!(
                        response.body() == &body[..],
                        "client {t}, request {i}: the body came back changed"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_request_that_reads_late_gets_its_whole_body_through_the_socket_ring() {
    // The handler reads nothing for a while: the connection's read blocks
    // fill, its reader stops, and its multishot recv, whose completions
    // then wait untaken, is cancelled; it is armed again once the handler
    // reads. The body still arrives whole and in order.
    let server = InProcess::start(
        || {
            async |req: &mut Request<'_>| {
                glommio::timer::sleep(Duration::from_millis(300)).await;
                let body = req.read_all().await?;
                req.send_response(200, "", body, &[], false).await
            }
        },
        Settings {
            socket_ring: true,
            ..one_executor()
        },
    );
    let mut client = Client::connect(&server.addr).unwrap();
    for size in [2 * 1024 * 1024 + 3, 700_001] {
        let body = pattern(size);
        let response = client.request(1, true, &[], &body).unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.body() == &body[..],
            "a body of {size} bytes came back changed"
        );
    }
}

#[test]
fn a_stop_past_the_shutdown_timeout_closes_every_connection() {
    stop_past_the_shutdown_timeout(false);
}

#[test]
fn a_stop_past_the_shutdown_timeout_closes_every_connection_on_the_socket_ring() {
    // Every connection has a recv in the kernel when the server stops; the
    // ring's driver ends after the connections, and the ring goes with
    // them.
    stop_past_the_shutdown_timeout(true);
}

/// Kept connections between requests close as the shutdown begins;
/// requests still waiting for their bodies when the shutdown timeout
/// passes are cut: every web server sees its connection end once the
/// server has returned, not only when the process exits.
fn stop_past_the_shutdown_timeout(socket_ring: bool) {
    if let Err(error) = simple_fastcgi_glommio::check_environment(1) {
        panic!("the glommio runtime cannot run on this machine: {error}");
    }
    let listener = simple_fastcgi_glommio::Listener::bind("127.0.0.1:0").unwrap();
    let addr = Addr::Tcp(listener.local_addr());
    let server = AsyncServer::from_listener(listener, || {
        async |req: &mut Request<'_>| {
            let body = req.read_all().await?;
            req.send_response(200, "", body, &[], false).await
        }
    })
    .unwrap()
    .with_settings(Settings {
        socket_ring,
        handle_signals: false,
        shutdown_timeout: Duration::from_millis(500),
        ..one_executor()
    });
    let handle = server.handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(server.run());
    });
    let mut clients = common::kept_and_waiting_clients(&addr);
    thread::sleep(Duration::from_millis(100));
    handle.shutdown();
    let result = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server stops");
    assert!(result.is_ok(), "the server stops cleanly: {result:?}");
    for client in &mut clients {
        assert!(common::ends(client), "the connection is closed");
    }
}
