//! The request a handler serves: its environment, its body, its output.

use std::io::{self, Read, Write};

use simple_fastcgi_core::{Output, Params, Role};

use crate::cgi::CgiIo;
use crate::conn::{Io, Kind};
use crate::server::ServerHandle;

/// One request, as the handler sees it: the FastCGI form of a CGI program's
/// environment, stdin and stdout.
///
/// - [`Request::environ`]: the params (CGI variables), borrowed for the whole
///   request, so values can be kept while the body is read.
/// - `io::Read`: the request body (FCGI_STDIN), streamed as it arrives;
///   [`Request::read_all`] reads it whole. (Empty for the Authorizer role,
///   which has no body: see [`Role::has_stdin`].) [`Request::data`] is the Filter
///   role's FCGI_DATA stream.
/// - `io::Write`: the response (FCGI_STDOUT), buffered; `flush` sends what is
///   buffered. [`Request::write_err`] writes to FCGI_STDERR.
/// - [`Request::send_response`] and [`Request::send_redirect`] write CGI
///   responses (see `response.rs`).
pub struct Request<'a> {
    pub(crate) backend: Backend<'a>,
    pub(crate) params: &'a Params,
    pub(crate) server: &'a ServerHandle,
    pub(crate) role: Role,
    pub(crate) request_id: u16,
    pub(crate) keep_conn: bool,
    pub(crate) written: bool,
}

/// Where the request's bytes come from and go to.
pub(crate) enum Backend<'a> {
    Fcgi {
        io: &'a mut Io,
        output: &'a mut Output,
    },
    Cgi(&'a mut CgiIo),
}

/// The Filter role's data stream (FCGI_DATA), from [`Request::data`].
pub struct Data<'r, 'a> {
    request: &'r mut Request<'a>,
}

impl<'a> Request<'a> {
    /// The request's params: the CGI environment the web server sent
    /// (`REQUEST_METHOD`, `QUERY_STRING`, `HTTP_*`, ...), names as received.
    ///
    /// ```no_run
    /// # fn handle(req: &mut simple_fastcgi_std::Request<'_>) -> std::io::Result<()> {
    /// let method = req.environ().get_str("REQUEST_METHOD").unwrap_or("GET");
    /// let body = req.read_all()?; // `method` is still usable
    /// # let _ = (method, body); Ok(()) }
    /// ```
    pub fn environ(&self) -> &'a Params {
        self.params
    }

    /// One param as UTF-8, if present and valid.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.get_str(name)
    }

    /// The server that runs this request.
    pub fn server(&self) -> &'a ServerHandle {
        self.server
    }

    /// The role the web server asked for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The FastCGI request id (0 when running as CGI).
    pub fn request_id(&self) -> u16 {
        self.request_id
    }

    /// Whether the web server keeps the connection after this request.
    pub fn keep_conn(&self) -> bool {
        self.keep_conn
    }

    /// Whether the request was aborted: the web server sent ABORT_REQUEST or
    /// closed the connection, or a write to it failed. It looks at the
    /// socket without blocking, so it notices an abort even while the
    /// handler does not read.
    pub fn aborted(&mut self) -> bool {
        match &mut self.backend {
            Backend::Fcgi { io, .. } => io.poll_aborted(),
            Backend::Cgi(_) => false,
        }
    }

    /// Reads the rest of the request body.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        self.read_to_end(&mut body)?;
        Ok(body)
    }

    /// The Filter role's data stream (FCGI_DATA). It follows the body: any
    /// body not read yet is skipped. Empty for other roles and under CGI.
    pub fn data(&mut self) -> Data<'_, 'a> {
        Data { request: self }
    }

    /// Writes `data` to the error stream (FCGI_STDERR; stderr under CGI).
    pub fn write_err(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.backend {
            Backend::Fcgi { io, output } => io.write_stderr(output, data),
            Backend::Cgi(cgi) => cgi.write_err(data),
        }
    }

    /// Whether any response bytes were written (buffered or sent).
    pub fn response_started(&self) -> bool {
        self.written
    }

    /// Whether response bytes have reached the socket already, so that a
    /// different response can no longer be sent instead.
    pub(crate) fn response_sent(&self) -> bool {
        match &self.backend {
            Backend::Fcgi { output, .. } => output.stdout_used(),
            Backend::Cgi(cgi) => cgi.sent(),
        }
    }

    /// Drops buffered, unsent response bytes.
    pub(crate) fn discard_unsent(&mut self) {
        match &mut self.backend {
            Backend::Fcgi { io, .. } => io.out.clear(),
            Backend::Cgi(cgi) => cgi.discard_unsent(),
        }
        self.written = false;
    }
}

impl Read for Request<'_> {
    /// Reads the request body (FCGI_STDIN) as it arrives.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.backend {
            Backend::Fcgi { .. } if !self.role.has_stdin() => Ok(0),
            Backend::Fcgi { io, .. } => io.read_input(Kind::Stdin, buf),
            Backend::Cgi(cgi) => cgi.read(buf),
        }
    }
}

impl Write for Request<'_> {
    /// Buffers response bytes (FCGI_STDOUT); large writes go out directly,
    /// framed around the caller's slice without copying it.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.backend {
            Backend::Fcgi { io, output } => io.write_stdout(output, data)?,
            Backend::Cgi(cgi) => cgi.write_all(data)?,
        }
        self.written |= !data.is_empty();
        Ok(data.len())
    }

    /// Sends the buffered response bytes now.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.backend {
            Backend::Fcgi { io, output } => io.flush_stdout(output),
            Backend::Cgi(cgi) => cgi.flush(),
        }
    }
}

impl Read for Data<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.request.backend {
            Backend::Fcgi { io, .. } if self.request.role == Role::Filter => {
                io.read_input(Kind::Data, buf)
            }
            _ => Ok(0),
        }
    }
}
