//! `fcgi-least`: the least work a correct FastCGI responder can do, the
//! ceiling the comparison measures real servers against. One thread, one
//! epoll; per connection it scans record headers only (params and body are
//! skipped, never parsed), and when a request's empty STDIN record arrives it
//! writes one precomputed response (STDOUT, the empty STDOUT, END_REQUEST)
//! with the request's id patched in. It honours FCGI_KEEP_CONN, answers
//! FCGI_GET_VALUES, and closes a connection on anything it does not expect.
//!
//! With `--thread-per-conn` it serves each connection on a thread of its
//! own with blocking reads instead: a kept request then costs exactly one
//! read and one write, the fewest syscalls a responder that reads and
//! writes with syscalls can make, and a thread switch.
//!
//! With `--uring` it does the same work on an io_uring of its own (see
//! `uring.rs`): the kernel hands it each connection's bytes as they come,
//! and one `io_uring_enter` sends a round's answers and waits for the next
//! round, a fraction of a syscall per request. `benches/syscalls.sh` runs
//! all three.
//!
//! ```text
//! fcgi-least                      # on fd 0, as spawn-fcgi starts it
//! fcgi-least unix:/tmp/least.sock
//! fcgi-least 127.0.0.1:9001
//! fcgi-least --thread-per-conn unix:/tmp/least.sock
//! fcgi-least --uring unix:/tmp/least.sock
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use simple_fastcgi_core::{
    BeginRequestBody, EndRequestBody, HEADER_LEN, Header, NameValue, ProtocolStatus, Record,
    RecordType,
};
use simple_fastcgi_std::Listener;
use simple_fastcgi_tests::stream::Stream;

mod uring;

const BODY: &[u8] =
    b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!";

/// One connection: its socket and unparsed bytes.
struct Conn {
    stream: Stream,
    records: Records,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let threads = args.next_if(|arg| arg == "--thread-per-conn").is_some();
    let uring = args.next_if(|arg| arg == "--uring").is_some();
    let listener = match args.next() {
        Some(addr) => Listener::bind(&addr).map(Some),
        None => Listener::fd0(),
    };
    let listener = match listener {
        Ok(Some(listener)) => listener,
        Ok(None) => {
            eprintln!("fcgi-least: fd 0 is not a listening socket; give an address");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("fcgi-least: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = if threads {
        serve_threads(&listener)
    } else if uring {
        uring::serve(&listener, &mut Response::new())
    } else {
        serve(&listener)
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fcgi-least: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The precomputed answer: STDOUT, empty STDOUT, END_REQUEST, with the
/// places of their three request ids.
struct Response {
    bytes: Vec<u8>,
    id_offsets: [usize; 3],
}

impl Response {
    fn new() -> Response {
        let mut bytes = vec![0u8; BODY.len() + 64];
        let mut n = Record::encode(RecordType::Stdout, 1, BODY, &mut bytes).unwrap_or(0);
        let empty_stdout = n;
        n += Record::encode(RecordType::Stdout, 1, b"", &mut bytes[n..]).unwrap_or(0);
        bytes.truncate(n);
        bytes.extend_from_slice(
            &EndRequestBody {
                app_status: 0,
                protocol_status: ProtocolStatus::RequestComplete,
            }
            .record(1),
        );
        Response {
            bytes,
            id_offsets: [2, empty_stdout + 2, n + 2],
        }
    }

    /// The answer to request `id`.
    fn to(&mut self, id: u16) -> &[u8] {
        let [hi, lo] = id.to_be_bytes();
        for at in self.id_offsets {
            self.bytes[at] = hi;
            self.bytes[at + 1] = lo;
        }
        &self.bytes
    }
}

fn serve(listener: &Listener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    const LISTENER: u64 = u64::MAX;
    epoll::add(
        &epoll,
        listener,
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )?;
    let mut response = Response::new();
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    loop {
        events.clear();
        match epoll::wait(&epoll, spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
        for event in &events {
            let key = event.data.u64();
            if key == LISTENER {
                accept_all(listener, &epoll, &mut conns);
                continue;
            }
            let fd = RawFd::try_from(key).unwrap_or(-1);
            let Some(conn) = conns.get_mut(&fd) else {
                continue;
            };
            let keep = conn.serve(&mut response).unwrap_or(false);
            if !keep {
                conns.remove(&fd);
            }
        }
    }
}

/// One thread per connection, blocking reads and writes: `Conn::serve`
/// returns only when the connection ends.
fn serve_threads(listener: &Listener) -> io::Result<()> {
    listener.set_nonblocking(false)?;
    loop {
        let fd = match rustix::net::accept_with(listener, rustix::net::SocketFlags::CLOEXEC) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(error) => return Err(error.into()),
        };
        let mut conn = Conn::new(stream_of(listener, fd));
        std::thread::spawn(move || {
            let _ = conn.serve(&mut Response::new());
        });
    }
}

/// The accepted socket as a stream, without Nagle's delay on TCP.
fn stream_of(listener: &Listener, fd: OwnedFd) -> Stream {
    if listener.is_tcp() {
        let stream = std::net::TcpStream::from(fd);
        let _ = stream.set_nodelay(true);
        Stream::Tcp(stream)
    } else {
        Stream::Unix(std::os::unix::net::UnixStream::from(fd))
    }
}

fn accept_all(listener: &Listener, epoll: &OwnedFd, conns: &mut HashMap<RawFd, Conn>) {
    loop {
        let accepted = rustix::net::accept_with(
            listener,
            rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        );
        let fd = match accepted {
            Ok(fd) => fd,
            Err(_) => return,
        };
        let raw = fd.as_raw_fd();
        let stream = stream_of(listener, fd);
        let registered = epoll::add(
            epoll,
            stream.as_fd(),
            epoll::EventData::new_u64(u64::try_from(raw).unwrap_or(0)),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        );
        if registered.is_ok() {
            conns.insert(raw, Conn::new(stream));
        }
    }
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            records: Records::new(),
        }
    }

    /// Reads until it would block (on a blocking socket: until the
    /// connection ends), answering each request as its empty STDIN
    /// arrives; `Ok(false)` when the connection is done.
    fn serve(&mut self, response: &mut Response) -> io::Result<bool> {
        loop {
            let n = match self.stream.read(self.records.room()) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let stream = &mut self.stream;
            if !self
                .records
                .scan(n, response, &mut |answer| stream.write_all(answer))?
            {
                return Ok(false);
            }
        }
    }
}

/// A connection's unparsed bytes and where it is in its records.
struct Records {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes of the current record's content and padding still to skip.
    skip: usize,
    keep_conn: bool,
}

impl Records {
    fn new() -> Records {
        Records {
            buf: vec![0u8; 80 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            skip: 0,
            keep_conn: true,
        }
    }

    /// Where the next bytes go: at least the rest of the buffer once what
    /// is parsed is dropped (a record that matters is at most 64 KiB, so
    /// there are at least 14 KiB).
    fn room(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// How many of `n` bytes just received belong to content being
    /// skipped, with nothing buffered before them: those need not be
    /// copied into [`Records::room`] at all.
    fn skip_incoming(&mut self, n: usize) -> usize {
        if self.start != self.end {
            return 0;
        }
        let skipped = self.skip.min(n);
        self.skip -= skipped;
        skipped
    }

    /// Takes `n` more bytes written into [`Records::room`], and hands
    /// `answer` the answer to each request whose empty STDIN they complete
    /// and to each FCGI_GET_VALUES; `Ok(false)` when the connection is done.
    fn scan(
        &mut self,
        n: usize,
        response: &mut Response,
        answer: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        self.end += n;
        // Skip the rest of records whose content does not matter.
        let skip = self.skip.min(self.end - self.start);
        self.start += skip;
        self.skip -= skip;
        while self.skip == 0 && self.end - self.start >= HEADER_LEN {
            let Ok((_, header)) = Header::parse(&self.buf[self.start..self.end]) else {
                return Ok(false);
            };
            let content = usize::from(header.content_length);
            let whole = HEADER_LEN + content + usize::from(header.padding_length);
            match header.record_type {
                RecordType::BeginRequest => {
                    if self.end - self.start < HEADER_LEN + BeginRequestBody::LEN {
                        break;
                    }
                    let body = &self.buf[self.start + HEADER_LEN..self.end];
                    let Ok((_, begin)) = BeginRequestBody::parse(body) else {
                        return Ok(false);
                    };
                    self.keep_conn = begin.keep_conn();
                }
                RecordType::Stdin if content == 0 => {
                    answer(response.to(header.request_id))?;
                    if !self.keep_conn {
                        return Ok(false);
                    }
                }
                RecordType::GetValues => {
                    if self.end - self.start < whole {
                        break;
                    }
                    let body =
                        &self.buf[self.start + HEADER_LEN..self.start + HEADER_LEN + content];
                    answer(&get_values_result(body)?)?;
                }
                RecordType::Params
                | RecordType::Stdin
                | RecordType::AbortRequest
                | RecordType::Data => {}
                _ => return Ok(false),
            }
            let available = self.end - self.start;
            self.start += whole.min(available);
            self.skip = whole.saturating_sub(available);
        }
        Ok(true)
    }
}

/// The FCGI_GET_VALUES_RESULT record answering a FCGI_GET_VALUES body.
fn get_values_result(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    while let Ok((after, pair)) = NameValue::parse(rest) {
        let value: &[u8] = match pair.name {
            b"FCGI_MAX_CONNS" => b"1024",
            b"FCGI_MAX_REQS" => b"1024",
            b"FCGI_MPXS_CONNS" => b"0",
            _ => {
                rest = after;
                continue;
            }
        };
        let answer = NameValue::new(pair.name, value);
        let at = reply.len();
        reply.resize(at + answer.encoded_len(), 0);
        let _ = answer.encode(&mut reply[at..]);
        rest = after;
    }
    let mut record = vec![0u8; reply.len() + 16];
    let n = Record::encode(RecordType::GetValuesResult, 0, &reply, &mut record)
        .map_err(|e| io::Error::other(e.to_string()))?;
    record.truncate(n);
    Ok(record)
}
