//! Running once as a plain CGI program (RFC 3875) when fd 0 is not a
//! listening socket: the request from the process environment and stdin,
//! the response to stdout.

use std::io::{self, BufWriter, Read, Stdout, Write};
use std::os::unix::ffi::OsStrExt;

use simple_fastcgi_core::{NameValue, Params, Role};

/// The process's stdin (at most `CONTENT_LENGTH` bytes of it) and stdout.
pub(crate) struct CgiIo {
    remaining: u64,
    stdout: BufWriter<Stdout>,
    sent: bool,
}

impl CgiIo {
    /// Stdin holds `CONTENT_LENGTH` bytes of body; without it, none
    /// (RFC 3875 4.2).
    pub(crate) fn new(params: &Params) -> CgiIo {
        let remaining = params
            .get_str("CONTENT_LENGTH")
            .and_then(|len| len.trim().parse().ok())
            .unwrap_or(0);
        CgiIo {
            remaining,
            stdout: BufWriter::with_capacity(16 * 1024, io::stdout()),
            sent: false,
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if limit == 0 {
            return Ok(0);
        }
        let n = io::stdin().lock().read(&mut buf[..limit])?;
        self.remaining -= n as u64;
        Ok(n)
    }

    pub(crate) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.stdout.buffer().len() + data.len() > self.stdout.capacity() {
            self.sent = true;
        }
        self.stdout.write_all(data)
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.sent |= !self.stdout.buffer().is_empty();
        self.stdout.flush()
    }

    pub(crate) fn write_err(&mut self, data: &[u8]) -> io::Result<()> {
        io::stderr().write_all(data)
    }

    pub(crate) fn sent(&self) -> bool {
        self.sent
    }

    pub(crate) fn discard_unsent(&mut self) {
        if !self.sent {
            // Nothing reached stdout yet: replace the buffer with an empty one.
            let fresh = BufWriter::with_capacity(16 * 1024, io::stdout());
            let old = std::mem::replace(&mut self.stdout, fresh);
            let _ = old.into_parts();
        }
    }
}

/// The process environment as params, as a CGI program receives it.
pub(crate) fn environ_params(params: &mut Params) -> io::Result<()> {
    params.clear();
    for (name, value) in std::env::vars_os() {
        let pair = NameValue::new(name.as_bytes(), value.as_bytes());
        let mut encoded = vec![0u8; pair.encoded_len()];
        pair.encode(&mut encoded).map_err(io::Error::other)?;
        params.feed(&encoded).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("CGI environment: {e}"))
        })?;
    }
    params
        .finish()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("CGI environment: {e}")))
}

/// The role a CGI request plays: Authorizer when `FCGI_ROLE` says so (as
/// some servers set it), Responder otherwise.
pub(crate) fn role(params: &Params) -> Role {
    match params.get_str("FCGI_ROLE") {
        Some("AUTHORIZER") => Role::Authorizer,
        Some("FILTER") => Role::Filter,
        _ => Role::Responder,
    }
}
