//! One transport connection: the socket, a fixed read buffer, the core's
//! state machine and the request being served. This module moves bytes and
//! routes the core's events; every protocol rule is the core's.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use simple_fastcgi_core::{
    Config, Connection, Event, Frame, MAX_RECORD_LEN, Output, Params, ParamsError, ProtocolError,
    ProtocolStatus, Role,
};

use crate::listener::Stream;
use crate::settings::Settings;

/// Read buffer per connection: a whole record of the largest size fits.
const READ_BUFFER: usize = MAX_RECORD_LEN;

/// STDOUT bytes gathered before they are framed and written; bigger writes
/// go straight from the caller's slice.
pub(crate) const OUT_BUFFER: usize = 16 * 1024;

/// Frames written by one `writev` at most (3 slices each).
const FRAMES_PER_WRITE: usize = 16;

/// What became of the connection while looking for the next request.
pub(crate) enum Ready {
    /// A request's params are complete (or failed, or it was aborted early).
    Request,
    /// More bytes are needed.
    NeedInput,
    /// The connection is done (the core closed it).
    Closed,
}

/// A request that began and is waiting for its params or being served.
pub(crate) struct Begun {
    pub(crate) request_id: u16,
    pub(crate) role: Role,
    pub(crate) keep_conn: bool,
    pub(crate) output: Output,
    pub(crate) params_error: Option<ParamsError>,
    pub(crate) aborted: bool,
}

/// How a fill of the read buffer went.
pub(crate) enum Fill {
    Data,
    Eof,
    TimedOut,
}

/// The socket side of a connection and the input state of its request.
pub(crate) struct Io {
    /// Shared with the server's table of connections, which shuts it down
    /// when a stop passes the shutdown timeout.
    stream: Arc<Stream>,
    core: Connection,
    /// Bytes read and not yet consumed start at `start`; the buffer's
    /// length is where the next read goes. Its capacity is reserved up
    /// front but touched only as far as reads fill it, so a connection
    /// that only ever gets small requests faults in a page or two of it.
    buf: Vec<u8>,
    start: usize,
    pub(crate) out: Vec<u8>,
    input: Input,
    timeouts: Timeouts,
    last_data: Instant,
    /// A write failed: the web server is gone.
    broken: bool,
    /// The web server closed its side.
    eof: bool,
    /// The last read took everything the socket had: nothing more to read
    /// until the socket's next readiness event.
    drained: bool,
    /// The web server closed its side (an event said so): reads go on until
    /// they see the end, whatever `drained` says.
    hung_up: bool,
}

/// Stdin and data chunks the core has delivered but the handler has not
/// read yet, as ranges of the read buffer.
#[derive(Default)]
struct Input {
    request_id: u16,
    stdin: VecDeque<(usize, usize)>,
    data: VecDeque<(usize, usize)>,
    stdin_done: bool,
    data_done: bool,
    aborted: bool,
}

/// The memory a connection needs, kept for the next connection when one
/// closes: allocating and faulting in ~150 KiB for every connection was most
/// of the cost of a connection per request.
pub(crate) struct Buffers {
    buf: Vec<u8>,
    out: Vec<u8>,
    stdin: VecDeque<(usize, usize)>,
    data: VecDeque<(usize, usize)>,
}

impl Buffers {
    pub(crate) fn new() -> Buffers {
        Buffers {
            buf: Vec::with_capacity(READ_BUFFER),
            out: Vec::with_capacity(OUT_BUFFER),
            stdin: VecDeque::with_capacity(8),
            data: VecDeque::with_capacity(8),
        }
    }
}

/// The most bytes of a closing connection a worker drops per wake, so
/// one fast sender cannot keep it busy.
const DRAIN_PER_WAKE: usize = 64 * 1024;

/// Which input stream a handler reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stdin,
    Data,
}

impl Io {
    /// A connection without buffers yet: [`Io::attach`] them before
    /// reading.
    pub(crate) fn new(stream: Stream, config: Config, settings: &Settings) -> io::Result<Io> {
        stream.set_nodelay()?;
        Ok(Io {
            stream: Arc::new(stream),
            core: Connection::new(config),
            buf: Vec::new(),
            start: 0,
            out: Vec::new(),
            input: Input::default(),
            timeouts: Timeouts {
                set: false,
                read: settings.read_timeout.max(Duration::from_millis(1)),
                write: settings.write_timeout.max(Duration::from_millis(1)),
            },
            last_data: Instant::now(),
            broken: false,
            eof: false,
            drained: false,
            hung_up: false,
        })
    }

    /// Whether it holds its buffers.
    pub(crate) fn has_buffers(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Takes buffers to read and write with.
    pub(crate) fn attach(&mut self, buffers: Buffers) {
        let Buffers {
            buf,
            mut out,
            mut stdin,
            mut data,
        } = buffers;
        let mut buf = buf;
        buf.clear();
        out.clear();
        stdin.clear();
        data.clear();
        self.buf = buf;
        self.start = 0;
        self.out = out;
        self.input.stdin = stdin;
        self.input.data = data;
    }

    /// Gives the buffers up while the connection has nothing in them: no
    /// bytes buffered, no chunks held, nothing to write. An idle connection
    /// then costs only its socket and protocol state, not ~130 KiB.
    pub(crate) fn lend(&mut self) -> Option<Buffers> {
        let empty = self.start == self.buf.len()
            && self.out.is_empty()
            && self.input.stdin.is_empty()
            && self.input.data.is_empty()
            && self.core.pending_output().is_empty();
        if !empty || !self.has_buffers() {
            return None;
        }
        self.start = 0;
        self.buf.clear();
        Some(Buffers {
            buf: std::mem::take(&mut self.buf),
            out: std::mem::take(&mut self.out),
            stdin: std::mem::take(&mut self.input.stdin),
            data: std::mem::take(&mut self.input.data),
        })
    }

    /// Whether the last read took everything the socket had (and no end
    /// is waiting to be read).
    pub(crate) fn is_drained(&self) -> bool {
        self.drained && !self.hung_up
    }

    /// The socket became readable (an epoll event; `hangup`: the web
    /// server closed its side): the next read is worth trying.
    pub(crate) fn expect_data(&mut self, hangup: bool) {
        self.drained = false;
        self.hung_up |= hangup;
    }

    /// When the web server last sent bytes.
    pub(crate) fn last_data(&self) -> Instant {
        self.last_data
    }

    /// Whether the web server stopped in the middle of something: bytes
    /// buffered that are not a whole record yet, or a record cut short.
    pub(crate) fn is_mid_input(&self) -> bool {
        self.has_buffered() || self.core.is_mid_record()
    }

    /// Whether unconsumed bytes are buffered (the core needs more of them).
    pub(crate) fn has_buffered(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Feeds buffered bytes to the core until a request is ready to run or
    /// more bytes are needed. Params go into `params`.
    pub(crate) fn next_request(
        &mut self,
        params: &mut Params,
        begun: &mut Option<Begun>,
    ) -> io::Result<Ready> {
        loop {
            let progress = self
                .core
                .feed(&self.buf[self.start..])
                .map_err(protocol_error)?;
            self.start += progress.consumed;
            let idle = progress.consumed == 0 && progress.event.is_none();
            let mut ready = false;
            match progress.event {
                Some(Event::Begin {
                    request_id,
                    role,
                    keep_conn,
                    output,
                }) => {
                    params.clear();
                    *begun = Some(Begun {
                        request_id,
                        role,
                        keep_conn,
                        output,
                        params_error: None,
                        aborted: false,
                    });
                }
                Some(Event::Params { bytes, .. }) => {
                    if let Some(request) = begun.as_mut().filter(|r| r.params_error.is_none()) {
                        request.params_error = params.feed(bytes).err();
                    }
                }
                Some(Event::ParamsEnd { .. }) => {
                    if let Some(request) = begun.as_mut().filter(|r| r.params_error.is_none()) {
                        request.params_error = params.finish().err();
                    }
                    ready = begun.is_some();
                }
                Some(Event::Abort { .. }) => {
                    if let Some(request) = begun.as_mut() {
                        request.aborted = true;
                        ready = true;
                    }
                }
                // Streams after the params come while a handler runs.
                Some(_) | None => {}
            }
            self.write_pending()?;
            if ready {
                return Ok(Ready::Request);
            }
            if self.core.is_closed() {
                return Ok(Ready::Closed);
            }
            if idle {
                return Ok(Ready::NeedInput);
            }
        }
    }

    /// Prepares the input side for a handler serving `request_id`.
    pub(crate) fn start_request(&mut self, request_id: u16) {
        self.input.request_id = request_id;
        self.input.stdin.clear();
        self.input.data.clear();
        self.input.stdin_done = false;
        self.input.data_done = false;
        self.input.aborted = false;
    }

    /// Reads more bytes into the buffer, waiting at most the read timeout,
    /// or not at all without `wait` (then `TimedOut` means nothing was
    /// there).
    pub(crate) fn fill(&mut self, wait: bool) -> io::Result<Fill> {
        let keep_from = self
            .input
            .stdin
            .front()
            .into_iter()
            .chain(self.input.data.front())
            .map(|&(start, _)| start)
            .fold(self.start, usize::min);
        if keep_from > 0 {
            let end = self.buf.len();
            self.buf.copy_within(keep_from..end, 0);
            self.buf.truncate(end - keep_from);
            self.start -= keep_from;
            for range in self
                .input
                .stdin
                .iter_mut()
                .chain(self.input.data.iter_mut())
            {
                range.0 -= keep_from;
                range.1 -= keep_from;
            }
        }
        if self.buf.len() == self.buf.capacity() {
            // Full of chunks the handler has not read: it must read first.
            return Err(io::Error::other("read buffer full of unread request body"));
        }
        if wait {
            self.timeouts.ensure(&self.stream)?;
        }
        let read = self.read_more(wait);
        match read {
            Ok(0) => {
                self.eof = true;
                Ok(Fill::Eof)
            }
            Ok(_) => {
                self.last_data = Instant::now();
                Ok(Fill::Data)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Fill::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Fill::TimedOut),
            Err(e) => {
                self.eof = true;
                Err(e)
            }
        }
    }

    /// Reads into the buffer's free room, noting whether that took all the
    /// socket had: a read that stops short of the room (or finds nothing)
    /// emptied it.
    fn read_more(&mut self, wait: bool) -> io::Result<usize> {
        let room = self.buf.capacity() - self.buf.len();
        let read = self.stream.read_into(&mut self.buf, wait);
        self.drained = match &read {
            Ok(n) => *n < room,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        read
    }

    /// Feeds buffered bytes to the core while a handler runs: chunks for
    /// the request are kept for it, ends and aborts are noted.
    fn pump(&mut self) -> io::Result<()> {
        loop {
            let progress = self
                .core
                .feed(&self.buf[self.start..])
                .map_err(protocol_error)?;
            let consumed_to = self.start + progress.consumed;
            let idle = progress.consumed == 0 && progress.event.is_none();
            let id = self.input.request_id;
            match progress.event {
                Some(Event::Stdin { request_id, bytes }) if request_id == id => {
                    self.input
                        .stdin
                        .push_back((consumed_to - bytes.len(), consumed_to));
                }
                Some(Event::StdinEnd { request_id }) if request_id == id => {
                    self.input.stdin_done = true
                }
                Some(Event::Data { request_id, bytes }) if request_id == id => {
                    self.input
                        .data
                        .push_back((consumed_to - bytes.len(), consumed_to));
                }
                Some(Event::DataEnd { request_id }) if request_id == id => {
                    self.input.data_done = true
                }
                Some(Event::Abort { request_id }) if request_id == id => self.input.aborted = true,
                Some(Event::Begin { output, .. }) => {
                    // Only with multiplexing, which this runtime does not
                    // configure; refuse rather than drop it.
                    let end = self.core.reject(output, ProtocolStatus::Overloaded);
                    write_all_vectored(
                        &self.stream,
                        &mut self.timeouts,
                        &mut [IoSlice::new(end.as_bytes())],
                    )?;
                }
                Some(_) | None => {}
            }
            self.start = consumed_to;
            self.write_pending()?;
            if idle || self.core.is_closed() {
                return Ok(());
            }
        }
    }

    /// Reads the request's `kind` stream into `dst`; 0 at its end.
    pub(crate) fn read_input(&mut self, kind: Kind, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        if kind == Kind::Data {
            // The data stream follows stdin: whatever stdin is left unread
            // is skipped.
            self.skip_stdin()?;
        }
        loop {
            let (queue, done) = match kind {
                Kind::Stdin => (&mut self.input.stdin, self.input.stdin_done),
                Kind::Data => (&mut self.input.data, self.input.data_done),
            };
            if let Some(range) = queue.front_mut() {
                let n = (range.1 - range.0).min(dst.len());
                dst[..n].copy_from_slice(&self.buf[range.0..range.0 + n]);
                range.0 += n;
                if range.0 == range.1 {
                    queue.pop_front();
                }
                return Ok(n);
            }
            if done {
                return Ok(0);
            }
            self.pump()?;
            if self.queued(kind) {
                continue;
            }
            if self.input.aborted {
                // The web server sends no more of an aborted request.
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the web server aborted the request",
                ));
            }
            self.wait_for_input()?;
        }
    }

    fn queued(&self, kind: Kind) -> bool {
        match kind {
            Kind::Stdin => !self.input.stdin.is_empty() || self.input.stdin_done,
            Kind::Data => !self.input.data.is_empty() || self.input.data_done,
        }
    }

    /// Blocks until more bytes arrive, up to the read timeout.
    fn wait_for_input(&mut self) -> io::Result<()> {
        if self.core.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "FastCGI connection closed",
            ));
        }
        loop {
            match self.fill(true)? {
                Fill::Data => return Ok(()),
                Fill::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the web server closed the connection in the middle of the request",
                    ));
                }
                Fill::TimedOut if self.last_data.elapsed() >= self.timeouts.read => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the web server sent nothing for the read timeout",
                    ));
                }
                Fill::TimedOut => {}
            }
        }
    }

    fn skip_stdin(&mut self) -> io::Result<()> {
        while !self.input.stdin_done {
            self.input.stdin.clear();
            self.pump()?;
            if !self.input.stdin_done {
                self.wait_for_input()?;
            }
        }
        self.input.stdin.clear();
        Ok(())
    }

    /// Whether the request was aborted: an ABORT_REQUEST arrived, the web
    /// server closed the connection, or a write to it failed. Looks at the
    /// socket without blocking.
    pub(crate) fn poll_aborted(&mut self) -> bool {
        if self.input.aborted || self.eof || self.broken {
            return true;
        }
        if self.buf.len() < self.buf.capacity() {
            match self.read_more(false) {
                Ok(0) => self.eof = true,
                Ok(_) => self.last_data = Instant::now(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.eof = true,
            }
        }
        if self.pump().is_err() {
            self.eof = true;
        }
        self.input.aborted || self.eof || self.broken
    }

    /// Buffers or writes STDOUT bytes.
    pub(crate) fn write_stdout(&mut self, output: &mut Output, data: &[u8]) -> io::Result<()> {
        if self.out.len() + data.len() <= OUT_BUFFER {
            self.out.extend_from_slice(data);
            return Ok(());
        }
        self.flush_stdout(output)?;
        if data.len() < OUT_BUFFER {
            self.out.extend_from_slice(data);
            Ok(())
        } else {
            let frames = output.stdout(data);
            self.write_frames(frames, &[])
        }
    }

    /// Frames and writes the buffered STDOUT bytes.
    pub(crate) fn flush_stdout(&mut self, output: &mut Output) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let result = self.write_frames(output.stdout(&out), &[]);
        self.out = out;
        self.out.clear();
        result
    }

    /// Writes STDERR bytes (unbuffered).
    pub(crate) fn write_stderr(&mut self, output: &mut Output, data: &[u8]) -> io::Result<()> {
        self.write_frames(output.stderr(data), &[])
    }

    /// Writes the buffered STDOUT bytes and the request's ending in one
    /// vectored write; returns whether the connection must close.
    pub(crate) fn finish(&mut self, mut output: Output, app_status: u32) -> io::Result<bool> {
        // The end of the request's input is often read already (a GET's
        // empty STDIN comes with its params) though the handler never
        // asked for it: noting it now tells the close that the web server
        // sends nothing more, so no lingering close is needed.
        if self.core.expects_input() && self.has_buffered() {
            self.pump()?;
        }
        let out = std::mem::take(&mut self.out);
        let frames = output.stdout(&out);
        let end = self.core.end_request(output, app_status);
        self.input.stdin.clear();
        self.input.data.clear();
        let result = self.write_frames(frames, end.as_bytes());
        self.out = out;
        self.out.clear();
        result.map(|()| end.close_connection())
    }

    /// Whether the web server is gone (end of stream or a failed write).
    pub(crate) fn is_gone(&self) -> bool {
        self.eof || self.broken
    }

    /// Whether closing now calls for a lingering close: the web server is
    /// there and may still be sending (the core's
    /// [`Connection::expects_input`]: a body the handler did not read, a
    /// record cut short). Closing a socket with unread input is a reset,
    /// and nginx and Apache then throw away the response they are reading
    /// (502/503).
    pub(crate) fn wants_linger(&self) -> bool {
        !self.broken && !self.eof && self.core.expects_input()
    }

    /// Begins a lingering close: replies out, our sending side shut, and
    /// the buffers given back (what the web server still sends is read and
    /// dropped by [`Io::drain`], whenever the socket is readable).
    pub(crate) fn begin_linger(&mut self) -> Buffers {
        if !self.broken {
            let _ = self.write_pending();
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.start = 0;
        self.buf.clear();
        self.input.stdin.clear();
        self.input.data.clear();
        self.out.clear();
        Buffers {
            buf: std::mem::take(&mut self.buf),
            out: std::mem::take(&mut self.out),
            stdin: std::mem::take(&mut self.input.stdin),
            data: std::mem::take(&mut self.input.data),
        }
    }

    /// Reads and drops what the web server sent, without waiting, at most
    /// [`DRAIN_PER_WAKE`] bytes: `true` once it has closed (or the socket
    /// failed), `false` while it may send more.
    pub(crate) fn drain(&mut self) -> bool {
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_PER_WAKE {
            match self.stream.read_nonblocking(&mut scratch) {
                Ok(0) => return true,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Closes the connection: management replies out, and dropping the
    /// socket closes it. (When [`Io::wants_linger`], the caller begins a
    /// lingering close instead, which ends here.)
    pub(crate) fn close(mut self) -> Buffers {
        if !self.broken {
            let _ = self.write_pending();
        }
        // Otherwise nothing more is expected: dropping the socket closes it.
        Buffers {
            buf: self.buf,
            out: self.out,
            stdin: self.input.stdin,
            data: self.input.data,
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let pending = self.core.pending_output();
        if pending.is_empty() {
            return Ok(());
        }
        let n = pending.len();
        let result = write_all_vectored(
            &self.stream,
            &mut self.timeouts,
            &mut [IoSlice::new(pending)],
        );
        result.map_err(|e| self.broke(e))?;
        self.core.advance_output(n);
        Ok(())
    }

    /// Writes `frames` (header, the caller's payload, padding, with no copy)
    /// followed by `tail`, a few frames per `writev`.
    fn write_frames<'p>(
        &mut self,
        mut frames: impl Iterator<Item = Frame<'p>>,
        tail: &[u8],
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the web server is gone",
            ));
        }
        let mut batch: [Option<Frame<'p>>; FRAMES_PER_WRITE] = [None; FRAMES_PER_WRITE];
        loop {
            let mut count = 0;
            for slot in batch.iter_mut() {
                *slot = frames.next();
                if slot.is_none() {
                    break;
                }
                count += 1;
            }
            let last = count < FRAMES_PER_WRITE;
            let mut slices: [IoSlice<'_>; 3 * FRAMES_PER_WRITE + 1] =
                [IoSlice::new(&[]); 3 * FRAMES_PER_WRITE + 1];
            let mut n = 0;
            for frame in batch.iter().take(count).flatten() {
                for part in frame.parts() {
                    slices[n] = IoSlice::new(part);
                    n += 1;
                }
            }
            if last {
                slices[n] = IoSlice::new(tail);
                n += 1;
            }
            let result = write_all_vectored(&self.stream, &mut self.timeouts, &mut slices[..n]);
            result.map_err(|e| self.broke(e))?;
            if last {
                return Ok(());
            }
        }
    }

    fn broke(&mut self, error: io::Error) -> io::Error {
        self.broken = true;
        error
    }
}

impl Io {
    /// The socket, for the server's table of connections.
    pub(crate) fn shared_stream(&self) -> Arc<Stream> {
        Arc::clone(&self.stream)
    }
}

impl AsFd for Io {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// The socket's read and write timeouts, set the first time a read or a
/// write has to wait: most connections never wait, and setting them costs
/// two syscalls per connection.
struct Timeouts {
    set: bool,
    /// Also how long a request may wait for the web server's next bytes.
    read: Duration,
    write: Duration,
}

impl Timeouts {
    /// Sets them on `stream` unless done already.
    fn ensure(&mut self, stream: &Stream) -> io::Result<()> {
        if !self.set {
            stream.set_read_timeout(Some(self.read))?;
            stream.set_write_timeout(Some(self.write))?;
            self.set = true;
        }
        Ok(())
    }
}

/// Writes every byte of `slices`, continuing after partial writes. Until
/// the socket is found full, writes do not wait; from then on they wait at
/// most the write timeout.
fn write_all_vectored(
    mut stream: &Stream,
    timeouts: &mut Timeouts,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = if timeouts.set {
            stream.write_vectored(slices)
        } else {
            stream.write_vectored_nonblocking(slices)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !timeouts.set => {
                timeouts.ensure(stream)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A protocol error as an `io::Error` the worker logs before closing.
fn protocol_error(error: ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
