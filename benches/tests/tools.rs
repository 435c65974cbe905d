//! The benchmark tools are instruments, so they are tested like code: a
//! server must not look fast by answering wrongly, so `fcgi-load` has to
//! notice every kind of wrong answer, and the least-work server, the
//! ceiling everything is measured against, has to answer correctly.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use simple_fastcgi_core::{HEADER_LEN, Header, RecordType};
use simple_fastcgi_tests::app::{App, TempDir, Transport};
use simple_fastcgi_tests::client::{Addr, Client};
use simple_fastcgi_tests::wire::Wire;

const LOAD: &str = env!("CARGO_BIN_EXE_fcgi-load");
const LEAST: &str = env!("CARGO_BIN_EXE_fcgi-least");

const HEAD: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
const HELLO: &[u8] = b"Hello, world!";

/// What a fake application does once a request is complete.
struct Answer {
    bytes: Vec<u8>,
    /// Close the connection after writing `bytes`.
    close: bool,
}

/// STDOUT with `head` and `body`, the empty STDOUT, and END_REQUEST with
/// `protocol_status`, all for `request_id`.
fn response(request_id: u16, head: &[u8], body: &[u8], protocol_status: u8) -> Wire {
    let stdout = [head, body].concat();
    Wire::new()
        .record(RecordType::Stdout, request_id, &stdout)
        .record(RecordType::Stdout, request_id, b"")
        .record(
            RecordType::EndRequest,
            request_id,
            &[0, 0, 0, 0, protocol_status, 0, 0, 0],
        )
}

fn right(id: u16) -> Answer {
    Answer {
        bytes: response(id, HEAD, HELLO, 0).into_bytes(),
        close: false,
    }
}

/// A fake application on a Unix socket in `dir`: it reads each request up
/// to its empty STDIN record and answers it with `answer`.
fn fake_app(dir: &TempDir, answer: fn(u16) -> Answer) -> PathBuf {
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind the fake app");
    // The threads end with the test process.
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || serve_fake(stream, answer));
        }
    });
    path
}

fn serve_fake(mut stream: UnixStream, answer: fn(u16) -> Answer) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= HEADER_LEN {
            let Ok((_, header)) = Header::parse(&buf) else {
                return;
            };
            if buf.len() < header.record_len() {
                break;
            }
            buf.drain(..header.record_len());
            if header.record_type == RecordType::Stdin && header.content_length == 0 {
                let Answer { bytes, close } = answer(header.request_id);
                if stream.write_all(&bytes).is_err() || close {
                    return;
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs fcgi-load for a short while against the socket at `path`.
fn load(path: &Path, extra: &[&str]) -> Output {
    let addr = format!("unix:{}", path.display());
    let mut args = vec![
        "--addr",
        &addr,
        "--conns",
        "2",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    Command::new(LOAD)
        .args(args)
        .output()
        .expect("run fcgi-load")
}

/// fcgi-load's verdict on `answer`: the exit status must say failure, and
/// the first error must contain `expected`.
fn assert_caught(answer: fn(u16) -> Answer, expected: &str) {
    let dir = TempDir::new("fcgi-load");
    let path = fake_app(&dir, answer);
    let output = load(&path, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "fcgi-load passed a wrong answer ({expected}): {stdout}"
    );
    assert!(
        !stdout.contains("\"errors\":0,"),
        "no errors counted: {stdout}"
    );
    assert!(
        stderr.contains(expected),
        "the first error should mention {expected:?}: {stderr}"
    );
}

#[test]
fn fcgi_load_passes_right_answers() {
    // The fake application itself is right, so the failures below are the
    // wrong answers' doing.
    let dir = TempDir::new("fcgi-load");
    let path = fake_app(&dir, right);
    let output = load(&path, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"errors\":0,"), "{stdout}");
    assert!(!stdout.contains("\"requests\":0,"), "{stdout}");
}

#[test]
fn fcgi_load_checks_as_strictly_when_it_spins_and_counts_the_spin_apart() {
    let dir = TempDir::new("fcgi-load");
    let path = fake_app(&dir, right);
    let output = load(&path, &["--spin", "200"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("\"errors\":0,"), "{stdout}");
    assert!(!stdout.contains("\"requests\":0,"), "{stdout}");
    let field = |name: &str| -> f64 {
        let key = format!("\"{name}\":");
        let at = stdout.find(&key).map(|at| at + key.len());
        let value = at.map(|at| &stdout[at..]).unwrap_or_default();
        let end = value.find([',', '}']).unwrap_or(value.len());
        value[..end]
            .parse()
            .unwrap_or_else(|_| panic!("no {name} in {stdout}"))
    };
    let cpu = field("loadgen_cpu_us_per_request");
    let spin = field("loadgen_spin_us_per_request");
    assert!(
        (0.0..=cpu).contains(&spin),
        "the spin ({spin} us) is part of the CPU time ({cpu} us): {stdout}"
    );

    let dir = TempDir::new("fcgi-load");
    let path = fake_app(&dir, |id| Answer {
        bytes: response(id, HEAD, b"Hello, world?", 0).into_bytes(),
        close: false,
    });
    let output = load(&path, &["--spin", "200"]);
    assert!(
        !output.status.success(),
        "a wrong body passed while spinning"
    );
}

#[test]
fn fcgi_load_catches_a_wrong_body() {
    assert_caught(
        |id| Answer {
            bytes: response(id, HEAD, b"Hello, world?", 0).into_bytes(),
            close: false,
        },
        "unexpected body",
    );
    assert_caught(
        |id| Answer {
            bytes: response(id, HEAD, b"Hello, world!!", 0).into_bytes(),
            close: false,
        },
        "unexpected body",
    );
}

#[test]
fn fcgi_load_catches_a_status_other_than_200() {
    assert_caught(
        |id| Answer {
            bytes: response(id, b"Status: 503 Service Unavailable\r\n\r\n", HELLO, 0).into_bytes(),
            close: false,
        },
        "status",
    );
}

#[test]
fn fcgi_load_catches_a_missing_end_request() {
    assert_caught(
        |id| Answer {
            bytes: Wire::new()
                .record(RecordType::Stdout, id, &[HEAD, HELLO].concat())
                .into_bytes(),
            close: true,
        },
        "closed the connection before END_REQUEST",
    );
}

#[test]
fn fcgi_load_catches_a_second_end_request() {
    assert_caught(
        |id| {
            let mut bytes = response(id, HEAD, HELLO, 0).into_bytes();
            bytes.extend_from_slice(
                Wire::new()
                    .record(RecordType::EndRequest, id, &[0; 8])
                    .as_bytes(),
            );
            Answer {
                bytes,
                close: false,
            }
        },
        "bytes after END_REQUEST",
    );
}

#[test]
fn fcgi_load_catches_records_of_another_request() {
    assert_caught(
        |id| Answer {
            bytes: response(id + 1, HEAD, HELLO, 0).into_bytes(),
            close: false,
        },
        "record for request",
    );
}

#[test]
fn fcgi_load_catches_an_end_request_that_is_not_complete() {
    // FCGI_OVERLOADED.
    assert_caught(
        |id| Answer {
            bytes: response(id, HEAD, HELLO, 2).into_bytes(),
            close: false,
        },
        "END_REQUEST with Overloaded",
    );
}

#[test]
fn fcgi_load_stops_on_an_application_that_never_answers() {
    let started = Instant::now();
    assert_caught(
        |_| Answer {
            bytes: Vec::new(),
            close: false,
        },
        "no response before the end of the run",
    );
    // It gives up 3 s after the end of its 0.3 s run.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn fcgi_load_runs_a_counted_run_to_its_end_however_long_it_takes() {
    // 10 ms per answer, 400 requests on one connection: over 4 s, past
    // load()'s `--duration 0.3` and the 3 s grace after it, so the run
    // completes only if the count, not the duration, ends it.
    fn slow(id: u16) -> Answer {
        thread::sleep(Duration::from_millis(10));
        right(id)
    }
    let dir = TempDir::new("fcgi-load");
    let path = fake_app(&dir, slow);
    let started = Instant::now();
    let output = load(&path, &["--requests", "400", "--conns", "1"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"requests\":400,"), "{stdout}");
    assert!(started.elapsed() > Duration::from_millis(3300), "{stdout}");
}

#[test]
fn the_least_work_server_answers_correctly() {
    least_work_server_answers_correctly(&[]);
}

#[test]
fn the_least_work_server_answers_correctly_with_a_thread_per_connection() {
    least_work_server_answers_correctly(&["--thread-per-conn"]);
}

#[test]
fn the_least_work_server_answers_correctly_on_io_uring() {
    least_work_server_answers_correctly(&["--uring"]);
}

fn least_work_server_answers_correctly(args: &[&str]) {
    // On fd 0, as spawn-fcgi starts it; killed when the test ends.
    let least = App::spawn_bin(Path::new(LEAST), args, Transport::Unix, &[], None);
    let addr = least.addr().clone();

    // Kept connection: requests one after another, with and without a
    // body, under different ids.
    let mut client = Client::connect(&addr).expect("connect");
    let body = vec![b'x'; 200 * 1024];
    for (id, body) in [(1u16, &b""[..]), (7, &body[..]), (1, &b"short"[..])] {
        let response = client.request(id, true, &[], body).expect("a response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), HELLO);
    }
    // FCGI_GET_VALUES between requests.
    let values = client
        .get_values(&["FCGI_MPXS_CONNS", "FCGI_MAX_REQS"])
        .expect("GET_VALUES_RESULT");
    assert!(values.contains(&("FCGI_MPXS_CONNS".to_string(), "0".to_string())));
    assert_eq!(values.len(), 2, "{values:?}");

    // Without FCGI_KEEP_CONN the server closes after the response.
    let response = client.request(2, false, &[], b"").expect("a response");
    assert_eq!(response.body(), HELLO);
    assert!(client.is_closed_by_peer());

    // fcgi-load, which checks every response, finds nothing wrong either.
    let Addr::Unix(path) = &addr else {
        unreachable!("started on a Unix socket")
    };
    for extra in [&[][..], &["--new-conn"], &["--body", "70000"]] {
        let output = load(path, extra);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{extra:?}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!stdout.contains("\"requests\":0,"), "{stdout}");
    }
}
