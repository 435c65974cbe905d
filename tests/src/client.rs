//! A raw FastCGI client: writes exactly the bytes a test gives it and reads
//! back whole records, so tests check byte-exact behaviour.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use simple_fastcgi_core::{
    EndRequestBody, HEADER_LEN, Header, NameValue, ProtocolStatus, RecordType, Role,
    UnknownTypeBody,
};

use crate::stream::Stream;
use crate::wire::Wire;

/// How long a test waits for the application before failing.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Where an application listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// One record as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The header.
    pub header: Header,
    /// The content.
    pub content: Vec<u8>,
}

/// What the application answered to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The STDOUT stream's bytes.
    pub stdout: Vec<u8>,
    /// The STDERR stream's bytes.
    pub stderr: Vec<u8>,
    /// Whether the empty STDOUT record that ends the stream came.
    pub stdout_ended: bool,
    /// END_REQUEST's app status.
    pub app_status: u32,
    /// END_REQUEST's protocol status (`None` before it arrived).
    pub protocol_status: Option<ProtocolStatus>,
}

/// A connection to an application.
pub struct Client {
    stream: Stream,
}

impl Addr {
    /// `unix:path` or `host:port`, as the std runtime's `bind` takes it.
    pub fn to_bind_string(&self) -> String {
        match self {
            Addr::Tcp(addr) => addr.clone(),
            Addr::Unix(path) => format!("unix:{}", path.display()),
        }
    }
}

impl Client {
    /// Connects, with read and write timeouts of [`TIMEOUT`].
    pub fn connect(addr: &Addr) -> io::Result<Client> {
        let stream = match addr {
            Addr::Tcp(addr) => Stream::connect(addr)?,
            Addr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        let client = Client { stream };
        client.set_timeout(TIMEOUT)?;
        Ok(client)
    }

    /// Changes the read and write timeouts.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_timeouts(Some(timeout))
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes a [`Wire`]'s bytes.
    pub fn send_wire(&mut self, wire: &Wire) -> io::Result<()> {
        self.send(wire.as_bytes())
    }

    /// Writes bytes in pieces of `size`, flushing each (for fragmented
    /// input tests).
    pub fn send_in_pieces(&mut self, bytes: &[u8], size: usize) -> io::Result<()> {
        for piece in bytes.chunks(size.max(1)) {
            self.stream.write_all(piece)?;
        }
        Ok(())
    }

    /// Writes `bytes` from another thread (a clone of the socket) while
    /// this one reads, as a web server streams a big body.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> io::Result<JoinHandle<io::Result<()>>> {
        let mut writer = self.stream.try_clone()?;
        Ok(std::thread::spawn(move || writer.write_all(&bytes)))
    }

    /// Closes both directions (the peer sees the end of the stream; unread
    /// bytes make it a reset).
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Both)
    }

    /// Closes the sending side.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Reads one whole record; `Ok(None)` at a clean end of stream.
    pub fn read_record(&mut self) -> io::Result<Option<Received>> {
        let mut head = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match self.stream.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "record header cut short",
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (_, header) = Header::parse(&head).map_err(|_| io::Error::other("bad header"))?;
        let mut body =
            vec![0u8; usize::from(header.content_length) + usize::from(header.padding_length)];
        self.stream.read_exact(&mut body)?;
        body.truncate(usize::from(header.content_length));
        Ok(Some(Received {
            header,
            content: body,
        }))
    }

    /// Reads records until the END_REQUEST of `request_id` and collects the
    /// response. Records of other requests are an error.
    pub fn read_response(&mut self, request_id: u16) -> io::Result<Response> {
        let mut response = Response::default();
        loop {
            let record = self.read_record()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before END_REQUEST",
                )
            })?;
            response.absorb(request_id, record)?;
            if response.protocol_status.is_some() {
                return Ok(response);
            }
        }
    }

    /// Reads the records of several concurrent (multiplexed) requests until
    /// each got its END_REQUEST; returns the ids in the order they ended,
    /// with their responses.
    pub fn read_responses(&mut self, request_ids: &[u16]) -> io::Result<Vec<(u16, Response)>> {
        let mut open: Vec<(u16, Response)> = request_ids
            .iter()
            .map(|&id| (id, Response::default()))
            .collect();
        let mut ended = Vec::new();
        while !open.is_empty() {
            let record = self.read_record()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before END_REQUEST",
                )
            })?;
            let id = record.header.request_id;
            let index = open
                .iter()
                .position(|(open_id, _)| *open_id == id)
                .ok_or_else(|| {
                    io::Error::other(format!("record for request {id}, which is not open"))
                })?;
            open[index].1.absorb(id, record)?;
            if open[index].1.protocol_status.is_some() {
                ended.push(open.swap_remove(index));
            }
        }
        Ok(ended)
    }

    /// Sends one whole request (KEEP_CONN as given) and reads its response.
    pub fn request(
        &mut self,
        request_id: u16,
        keep_conn: bool,
        params: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let wire = Wire::new()
            .begin(request_id, Role::Responder, keep_conn)
            .params(request_id, params)
            .stdin(request_id, body);
        if wire.as_bytes().len() <= 64 * 1024 {
            self.send_wire(&wire)?;
            return self.read_response(request_id);
        }
        // A big body is written while the response is read, as a web server
        // does: an app that streams its answer would otherwise block.
        let sending = self.send_in_background(wire.into_bytes())?;
        let response = self.read_response(request_id);
        sending
            .join()
            .map_err(|_| io::Error::other("writer panicked"))??;
        response
    }

    /// Asks FCGI_GET_VALUES for `names` and returns the answered pairs.
    pub fn get_values(&mut self, names: &[&str]) -> io::Result<Vec<(String, String)>> {
        self.send_wire(&Wire::new().get_values(names))?;
        let record = self
            .read_record()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no GET_VALUES_RESULT"))?;
        if record.header.record_type != RecordType::GetValuesResult || record.header.request_id != 0
        {
            return Err(io::Error::other(format!(
                "expected GET_VALUES_RESULT, got {:?}",
                record.header
            )));
        }
        let mut pairs = Vec::new();
        let mut rest = &record.content[..];
        while !rest.is_empty() {
            let (after, pair) =
                NameValue::parse(rest).map_err(|_| io::Error::other("bad pair in result"))?;
            pairs.push((
                String::from_utf8_lossy(pair.name).into_owned(),
                String::from_utf8_lossy(pair.value).into_owned(),
            ));
            rest = after;
        }
        Ok(pairs)
    }

    /// Whether the application closed the connection: a read that ends
    /// without bytes (or with a reset).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        loop {
            return match self.stream.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
            };
        }
    }
}

impl Response {
    /// Adds one record of `request_id` to the response.
    pub fn absorb(&mut self, request_id: u16, record: Received) -> io::Result<()> {
        if record.header.request_id != request_id {
            return Err(io::Error::other(format!(
                "record for request {} while reading {request_id}: {:?}",
                record.header.request_id, record.header
            )));
        }
        if self.protocol_status.is_some() {
            return Err(io::Error::other("record after END_REQUEST"));
        }
        match record.header.record_type {
            RecordType::Stdout if record.content.is_empty() => {
                if self.stdout_ended {
                    return Err(io::Error::other("STDOUT ended twice"));
                }
                self.stdout_ended = true;
            }
            RecordType::Stdout => {
                if self.stdout_ended {
                    return Err(io::Error::other("STDOUT after its end"));
                }
                self.stdout.extend_from_slice(&record.content);
            }
            RecordType::Stderr => self.stderr.extend_from_slice(&record.content),
            RecordType::EndRequest => {
                let (_, body) = EndRequestBody::parse(&record.content)
                    .map_err(|_| io::Error::other("short END_REQUEST"))?;
                self.app_status = body.app_status;
                self.protocol_status = Some(body.protocol_status);
            }
            other => return Err(io::Error::other(format!("unexpected {other:?} record"))),
        }
        Ok(())
    }

    /// The CGI head (up to the blank line) as text.
    pub fn head(&self) -> String {
        let end = find(&self.stdout, b"\r\n\r\n").unwrap_or(self.stdout.len());
        String::from_utf8_lossy(&self.stdout[..end]).into_owned()
    }

    /// The body after the CGI head.
    pub fn body(&self) -> &[u8] {
        match find(&self.stdout, b"\r\n\r\n") {
            Some(end) => &self.stdout[end + 4..],
            None => &[],
        }
    }

    /// The status code from the `Status:` header (200 without one).
    pub fn status(&self) -> u16 {
        self.head()
            .lines()
            .find_map(|line| line.strip_prefix("Status: "))
            .and_then(|rest| rest.get(..3)?.parse().ok())
            .unwrap_or(200)
    }
}

/// The position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The record type in an UNKNOWN_TYPE record's content.
pub fn unknown_type(record: &Received) -> Option<RecordType> {
    (record.header.record_type == RecordType::UnknownType)
        .then(|| {
            UnknownTypeBody::parse(&record.content)
                .ok()
                .map(|(_, b)| b.record_type)
        })
        .flatten()
}
