//! `fcgi-load`: a FastCGI load generator. It speaks FastCGI straight to an
//! application's socket (Unix or TCP), with the request nginx sends (26
//! params, an optional POST body), over N connections, kept
//! (FCGI_KEEP_CONN) or new for every request, for a duration or a number of
//! requests. Every response is checked: status 200, the expected body, one
//! END_REQUEST with FCGI_REQUEST_COMPLETE.
//!
//! One thread, non-blocking sockets, one epoll: a request is one `write`
//! of bytes encoded once, a response one or two `read`s parsed in place.
//! It prints its own CPU time per request, so its cost can be set against
//! the server's.
//!
//! With `--spin MICROS` it polls its epoll without sleeping for up to that
//! long while answers are due, before it blocks. Give it a CPU of its own
//! then (`taskset`): a load generator that sleeps between answers makes
//! the server wake it for each one, and where a wake-up is dear (a
//! cross-CPU interrupt in a VM) that cost lands on the server, only on the
//! servers a little slower than the load generator, which then lets
//! itself fall asleep after every answer. The time it spins is counted
//! apart from the CPU time it works.
//!
//! ```text
//! fcgi-load --addr unix:/tmp/app.sock --conns 8 --duration 10
//! fcgi-load --addr 127.0.0.1:9000 --conns 8 --new-conn --json
//! fcgi-load --addr unix:/tmp/mirror.sock --body 65536 --expect-echo
//! ```

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use simple_fastcgi_core::{EndRequestBody, HEADER_LEN, Header, ProtocolStatus, RecordType, Role};
use simple_fastcgi_tests::stream::Stream;
use simple_fastcgi_tests::wire::{Wire, nginx_params};

/// How long a timed run waits for answers still in flight at its end.
const GRACE: Duration = Duration::from_secs(3);
/// How long a run of `--requests N` may take, after the warm-up.
const COUNTED_RUN_LIMIT: Duration = Duration::from_secs(600);

const USAGE: &str = "usage: fcgi-load --addr (unix:PATH | HOST:PORT) [--conns N] [--duration SECONDS | --requests N]
                 [--body BYTES] [--new-conn] [--expect TEXT | --expect-echo] [--warmup SECONDS]
                 [--param NAME=VALUE]... [--spin MICROS] [--json]

  --addr        the application's socket
  --conns       concurrent connections (default 8)
  --duration    seconds to run (default 10), after the warm-up
  --requests    stop after this many requests instead (at most 600 s)
  --body        POST a body of this many bytes (default: GET, no body)
  --new-conn    a new connection per request (default: FCGI_KEEP_CONN)
  --expect      the exact response body (default: Hello, world!)
  --expect-echo the response body is the request body
  --warmup      seconds of load before measuring (default 1)
  --param       add or replace a param (SCRIPT_FILENAME=/srv/hello.php for PHP-FPM)
  --spin        while answers are due, poll for up to this many microseconds
                before sleeping (default 0: sleep at once); for a load
                generator with a CPU of its own
  --json        print the result as one JSON object";

/// What to run.
struct Options {
    addr: String,
    conns: usize,
    duration: Duration,
    requests: Option<u64>,
    body: usize,
    new_conn: bool,
    expect: Expect,
    warmup: Duration,
    params: Vec<(String, String)>,
    /// How long to poll without sleeping while answers are due.
    spin: Duration,
    json: bool,
}

enum Expect {
    Exact(Vec<u8>),
    Echo,
}

/// One connection's state.
struct Conn {
    stream: Stream,
    /// Bytes of the current request written so far.
    written: usize,
    /// Response bytes: `buf[parsed..filled]` are read and not yet parsed.
    buf: Box<[u8]>,
    parsed: usize,
    filled: usize,
    response: ResponseCheck,
    started: Instant,
    /// A request is in flight.
    busy: bool,
    /// Its place in `conns`, and its events' data.
    index: usize,
    /// Registered for output too: a request once did not fit the socket.
    /// Until then only input is watched, so the application reading a
    /// request does not wake this process for nothing.
    watching_out: bool,
}

/// Checks a response as its records arrive, without keeping it.
#[derive(Default)]
struct ResponseCheck {
    /// The CGI head seen so far (until the blank line).
    head: Vec<u8>,
    head_done: bool,
    /// Body bytes compared so far.
    body_len: usize,
    body_ok: bool,
    stdout_ended: bool,
    error: Option<String>,
}

/// Totals of a run.
#[derive(Default)]
struct Totals {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
    /// Time spent polling for answers that had not come yet, while
    /// measuring (`--spin`).
    spun: Duration,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("fcgi-load: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        addr: String::new(),
        conns: 8,
        duration: Duration::from_secs(10),
        requests: None,
        body: 0,
        new_conn: false,
        expect: Expect::Exact(b"Hello, world!".to_vec()),
        warmup: Duration::from_secs(1),
        params: Vec::new(),
        spin: Duration::ZERO,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    let seconds = |v: Option<String>| -> Result<Duration, String> {
        v.and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| "a number of seconds is needed".to_string())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => options.addr = args.next().ok_or("--addr needs a value")?,
            "--conns" => {
                options.conns = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--conns needs a positive number")?
            }
            "--duration" => options.duration = seconds(args.next())?,
            "--warmup" => options.warmup = seconds(args.next())?,
            "--requests" => {
                options.requests = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--requests needs a number")?,
                )
            }
            "--body" => {
                options.body = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--body needs a size")?
            }
            "--new-conn" => options.new_conn = true,
            "--expect" => {
                options.expect =
                    Expect::Exact(args.next().ok_or("--expect needs a value")?.into_bytes())
            }
            "--expect-echo" => options.expect = Expect::Echo,
            "--param" => {
                let param = args.next().ok_or("--param needs NAME=VALUE")?;
                let (name, value) = param.split_once('=').ok_or("--param needs NAME=VALUE")?;
                options.params.push((name.to_string(), value.to_string()));
            }
            "--spin" => {
                options.spin = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_micros)
                    .ok_or("--spin needs a number of microseconds")?
            }
            "--json" => options.json = true,
            "-h" | "--help" => return Err("fcgi-load: a FastCGI load generator".to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.addr.is_empty() {
        return Err("--addr is required".to_string());
    }
    Ok(options)
}

/// The request every connection sends, encoded once.
fn request_bytes(options: &Options, body: &[u8]) -> Vec<u8> {
    let mut params = nginx_params();
    let length = body.len().to_string();
    if !body.is_empty() {
        params.retain(|(name, _)| {
            *name != "REQUEST_METHOD" && *name != "CONTENT_LENGTH" && *name != "CONTENT_TYPE"
        });
        params.push(("REQUEST_METHOD", "POST"));
        params.push(("CONTENT_TYPE", "application/octet-stream"));
        params.push(("CONTENT_LENGTH", &length));
    }
    for (name, value) in &options.params {
        params.retain(|(n, _)| n != name);
        params.push((name, value));
    }
    Wire::new()
        .begin(1, Role::Responder, !options.new_conn)
        .params(1, &params)
        .stdin(1, body)
        .into_bytes()
}

fn run(options: &Options) -> io::Result<u64> {
    let body: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz"
        .iter()
        .copied()
        .cycle()
        .take(options.body)
        .collect();
    let request = request_bytes(options, &body);
    let expected: &[u8] = match &options.expect {
        Expect::Exact(bytes) => bytes,
        Expect::Echo => &body,
    };
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let mut conns: Vec<Conn> = Vec::with_capacity(options.conns);
    for index in 0..options.conns {
        let conn = Conn::connect(&options.addr, index)?;
        register(&epoll, &conn.stream, index)?;
        conns.push(conn);
    }
    let cpu_start = cpu_time();
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let mut totals = Totals::default();
    let mut measuring = options.warmup.is_zero();
    let mut measured_cpu_start = cpu_start;
    let mut measured_start = start;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);

    for (index, conn) in conns.iter_mut().enumerate() {
        conn.send(&request, &epoll)
            .map_err(|e| io::Error::new(e.kind(), format!("connection {index}: {e}")))?;
    }
    let mut in_flight = conns.len();
    // Requests still unanswered by then count as errors: a server that
    // stops answering cannot hang the run.
    let give_up = match options.requests {
        Some(_) => measure_from + COUNTED_RUN_LIMIT,
        None => end + GRACE,
    };
    while in_flight > 0 {
        if Instant::now() >= give_up {
            for _ in 0..in_flight {
                totals.error("no response before the end of the run".to_string());
            }
            break;
        }
        let spun = wait(&epoll, &mut events, options.spin)?;
        let now = Instant::now();
        if measuring {
            totals.spun += spun;
        }
        if !measuring && now >= measure_from {
            measuring = true;
            measured_cpu_start = cpu_time();
            measured_start = now;
        }
        for event in &events {
            let index = usize::try_from(event.data.u64()).unwrap_or(usize::MAX);
            let Some(conn) = conns.get_mut(index) else {
                continue;
            };
            if !conn.busy {
                continue;
            }
            if conn.written < request.len() {
                if let Err(error) = conn.send(&request, &epoll) {
                    totals.error(format!("write: {error}"));
                    conn.busy = false;
                    in_flight -= 1;
                    continue;
                }
            }
            match conn.receive(expected) {
                Ok(false) => {}
                Ok(true) => {
                    let latency = conn.started.elapsed();
                    if measuring {
                        match conn.response.verdict(expected.len()) {
                            Ok(()) => {
                                totals.requests += 1;
                                totals
                                    .latencies_us
                                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                            }
                            Err(error) => totals.error(error),
                        }
                    } else if let Err(error) = conn.response.verdict(expected.len()) {
                        totals.error(error);
                    }
                    conn.busy = false;
                    // With --requests, the others in flight count too: no
                    // more are sent than were asked for.
                    let stopping = options.requests.map_or(now >= end, |n| {
                        totals.requests + totals.errors + (in_flight as u64 - 1) >= n
                    });
                    if stopping {
                        in_flight -= 1;
                        continue;
                    }
                    if options.new_conn {
                        let fresh = Conn::open(&options.addr).and_then(|stream| {
                            register(&epoll, &stream, index)?;
                            Ok(stream)
                        });
                        match fresh {
                            // The buffer is kept: only the socket is new.
                            Ok(fresh) => {
                                conn.stream = fresh;
                                conn.watching_out = false;
                            }
                            Err(error) => {
                                totals.error(format!("connect: {error}"));
                                in_flight -= 1;
                                continue;
                            }
                        }
                    }
                    if let Err(error) = conn.send(&request, &epoll) {
                        totals.error(format!("write: {error}"));
                        in_flight -= 1;
                    }
                }
                Err(error) => {
                    totals.error(error);
                    conn.busy = false;
                    in_flight -= 1;
                }
            }
        }
    }
    let elapsed = measured_start.elapsed();
    let cpu = cpu_time().saturating_sub(measured_cpu_start);
    report(options, &mut totals, elapsed, cpu);
    Ok(totals.errors)
}

/// Waits for events: polls for up to `spin` while none have come, then
/// sleeps (at most a second, so that the run's end is seen). Returns how
/// long it polled in vain.
fn wait(epoll: &impl AsFd, events: &mut Vec<epoll::Event>, spin: Duration) -> io::Result<Duration> {
    const NOW: rustix::event::Timespec = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    const A_SECOND: rustix::event::Timespec = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    events.clear();
    if spin.is_zero() {
        epoll::wait(epoll, spare_capacity(events), Some(&A_SECOND))?;
        return Ok(Duration::ZERO);
    }
    epoll::wait(epoll, spare_capacity(events), Some(&NOW))?;
    if !events.is_empty() {
        return Ok(Duration::ZERO);
    }
    let started = Instant::now();
    loop {
        epoll::wait(epoll, spare_capacity(events), Some(&NOW))?;
        let spun = started.elapsed();
        if !events.is_empty() {
            return Ok(spun);
        }
        if spun >= spin {
            epoll::wait(epoll, spare_capacity(events), Some(&A_SECOND))?;
            return Ok(spun);
        }
    }
}

impl Totals {
    fn error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

fn report(options: &Options, totals: &mut Totals, elapsed: Duration, cpu: Duration) {
    totals.latencies_us.sort_unstable();
    // The `per_mille`th latency, by nearest rank.
    let pct = |per_mille: usize| -> u32 {
        if totals.latencies_us.is_empty() {
            return 0;
        }
        let last = totals.latencies_us.len() - 1;
        let rank = (last * per_mille + 500) / 1000;
        totals.latencies_us[rank.min(last)]
    };
    let rate = totals.requests as f64 / elapsed.as_secs_f64().max(1e-9);
    let per_request = |time: Duration| time.as_secs_f64() * 1e6 / (totals.requests.max(1) as f64);
    let cpu_per_request = per_request(cpu);
    let spin_per_request = per_request(totals.spun.min(cpu));
    let mut text = String::new();
    if options.json {
        let _ = writeln!(
            text,
            "{{\"addr\":\"{}\",\"conns\":{},\"body\":{},\"new_conn\":{},\"seconds\":{:.3},\"requests\":{},\"errors\":{},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"loadgen_cpu_us_per_request\":{:.2},\"loadgen_spin_us_per_request\":{:.2}}}",
            options.addr.replace('"', ""),
            options.conns,
            options.body,
            options.new_conn,
            elapsed.as_secs_f64(),
            totals.requests,
            totals.errors,
            rate,
            pct(500),
            pct(990),
            cpu_per_request,
            spin_per_request
        );
    } else {
        let _ = writeln!(
            text,
            "{} conns, {}, body {} B: {} requests in {:.2} s, {} errors",
            options.conns,
            if options.new_conn {
                "new connection per request"
            } else {
                "keep-conn"
            },
            options.body,
            totals.requests,
            elapsed.as_secs_f64(),
            totals.errors
        );
        let _ = writeln!(
            text,
            "  {rate:.0} req/s, latency p50 {} us, p99 {} us",
            pct(500),
            pct(990)
        );
        let _ = write!(
            text,
            "  fcgi-load itself: {cpu_per_request:.2} us CPU per request"
        );
        if options.spin.is_zero() {
            text.push('\n');
        } else {
            let _ = writeln!(
                text,
                ", {spin_per_request:.2} us of it polling for answers not yet come"
            );
        }
    }
    // A reader that went away (`| head`) is not an error of the run.
    let _ = io::stdout().lock().write_all(text.as_bytes());
    if let Some(error) = &totals.first_error {
        eprintln!("fcgi-load: first error: {error}");
    }
}

impl Conn {
    fn connect(addr: &str, index: usize) -> io::Result<Conn> {
        Ok(Conn {
            stream: Conn::open(addr)?,
            written: 0,
            buf: vec![0u8; 256 * 1024].into_boxed_slice(),
            parsed: 0,
            filled: 0,
            response: ResponseCheck::default(),
            started: Instant::now(),
            busy: false,
            index,
            watching_out: false,
        })
    }

    /// A connected, non-blocking socket.
    fn open(addr: &str) -> io::Result<Stream> {
        let stream = Stream::connect(addr)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    }

    /// Starts (or continues) writing the request; when the socket is full,
    /// watches it for room.
    fn send(&mut self, request: &[u8], epoll: &impl AsFd) -> io::Result<()> {
        if !self.busy {
            self.busy = true;
            self.written = 0;
            self.parsed = 0;
            self.filled = 0;
            self.response.reset();
            self.started = Instant::now();
        }
        while self.written < request.len() {
            match self.stream.write(&request[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.watching_out {
                        epoll::modify(
                            epoll,
                            &self.stream,
                            epoll::EventData::new_u64(self.index as u64),
                            WATCH | epoll::EventFlags::OUT,
                        )?;
                        self.watching_out = true;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there; `Ok(true)` once the response is complete.
    fn receive(&mut self, expected: &[u8]) -> Result<bool, String> {
        loop {
            if self.filled == self.buf.len() {
                // Parsed bytes are dropped to make room.
                self.buf.copy_within(self.parsed..self.filled, 0);
                self.filled -= self.parsed;
                self.parsed = 0;
                if self.filled == self.buf.len() {
                    return Err("a record larger than the read buffer".to_string());
                }
            }
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    return Err(
                        "the application closed the connection before END_REQUEST".to_string()
                    );
                }
                Ok(n) => {
                    self.filled += n;
                    if let Some(done) = self.parse(expected)? {
                        return Ok(done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Parses whole records; `Some(true)` at END_REQUEST.
    fn parse(&mut self, expected: &[u8]) -> Result<Option<bool>, String> {
        loop {
            let rest = &self.buf[self.parsed..self.filled];
            if rest.len() < HEADER_LEN {
                return Ok(None);
            }
            let (_, header) = Header::parse(rest).map_err(|_| "bad record header".to_string())?;
            if rest.len() < header.record_len() {
                return Ok(None);
            }
            let content = &rest[HEADER_LEN..HEADER_LEN + usize::from(header.content_length)];
            if header.request_id != 1 {
                return Err(format!("record for request {}", header.request_id));
            }
            match header.record_type {
                RecordType::Stdout if content.is_empty() => self.response.stdout_ended = true,
                RecordType::Stdout => self.response.stdout(content, expected),
                RecordType::Stderr => {}
                RecordType::EndRequest => {
                    let (_, end) = EndRequestBody::parse(content)
                        .map_err(|_| "short END_REQUEST".to_string())?;
                    if end.protocol_status != ProtocolStatus::RequestComplete {
                        return Err(format!("END_REQUEST with {:?}", end.protocol_status));
                    }
                    self.parsed += header.record_len();
                    if self.parsed != self.filled {
                        return Err("bytes after END_REQUEST".to_string());
                    }
                    return Ok(Some(true));
                }
                other => return Err(format!("unexpected {other:?} record")),
            }
            self.parsed += header.record_len();
        }
    }
}

impl ResponseCheck {
    /// Ready for the next response; the head's buffer is kept.
    fn reset(&mut self) {
        self.head.clear();
        self.head_done = false;
        self.body_len = 0;
        self.body_ok = false;
        self.stdout_ended = false;
        self.error = None;
    }

    fn stdout(&mut self, mut content: &[u8], expected: &[u8]) {
        if self.stdout_ended {
            self.error.get_or_insert("STDOUT after its end".to_string());
            return;
        }
        if !self.head_done {
            self.head.extend_from_slice(content);
            match self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => {
                    self.head_done = true;
                    self.body_ok = true;
                    // The body's first bytes came with the head.
                    let head = std::mem::take(&mut self.head);
                    self.compare(&head[end + 4..], expected);
                    self.head = head;
                    self.head.truncate(end + 4);
                }
                None => return,
            }
            content = &[];
        }
        self.compare(content, expected);
    }

    fn compare(&mut self, piece: &[u8], expected: &[u8]) {
        let at = self.body_len;
        self.body_len += piece.len();
        if self.body_len > expected.len() || expected[at..at + piece.len()] != *piece {
            self.body_ok = false;
        }
    }

    fn verdict(&self, expected_len: usize) -> Result<(), String> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        // A CGI head without a Status line means 200 (RFC 3875 6.3.3).
        let status = self
            .head
            .split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(b"Status: "))
            .map_or(&b"200"[..], |rest| &rest[..rest.len().min(3)]);
        if status != b"200" {
            return Err(format!("status: {}", String::from_utf8_lossy(&self.head)));
        }
        // The empty STDOUT that ends the stream is not required: PHP-FPM
        // does not send it, and web servers accept that.
        if !self.body_ok || self.body_len != expected_len {
            return Err(format!("unexpected body ({} bytes)", self.body_len));
        }
        Ok(())
    }
}

/// What every connection is watched for: input, edge-triggered.
const WATCH: epoll::EventFlags = epoll::EventFlags::IN.union(epoll::EventFlags::ET);

/// Watches `stream` for input as connection `index`.
fn register(epoll: &impl AsFd, stream: &Stream, index: usize) -> io::Result<()> {
    epoll::add(
        epoll,
        stream,
        epoll::EventData::new_u64(index as u64),
        WATCH,
    )?;
    Ok(())
}

/// This process's CPU time (user + system) from `/proc/self/stat`, in
/// clock ticks (10 ms): precise enough over a run of seconds.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        });
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_nanos(
        ticks
            .unwrap_or(0)
            .saturating_mul(1_000_000_000 / per_second),
    )
}
