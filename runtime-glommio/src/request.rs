//! The request an async handler serves.

use std::io::{self, IoSlice};
use std::rc::Rc;

use simple_fastcgi_core::{HEADER_LEN, MAX_CONTENT_LEN, Output, Params, Role};

use crate::conn::{Conn, Kind, Slot};
use crate::server::ServerHandle;

/// Response bytes gathered before they are framed and written; bigger
/// writes go out straight from the caller's slice.
const OUT_BUFFER: usize = 16 * 1024;

/// One request, as an async handler sees it: the seed's
/// `AsyncFcgiHandler` members and methods.
///
/// - [`Request::environ`]: the params (CGI variables).
/// - [`Request::read_into`], [`Request::read`], [`Request::read_all`]: the
///   body (FCGI_STDIN), streamed as it arrives, copied once from the
///   connection's read buffer into yours.
/// - [`Request::write`], [`Request::flush`], [`Request::write_err`]: the
///   response (FCGI_STDOUT, buffered) and FCGI_STDERR.
/// - [`Request::aborted`] and [`Request::wait_aborted`]: the web server's
///   FCGI_ABORT_REQUEST (or its closing the connection), seen as it happens.
pub struct Request<'a> {
    conn: &'a Conn,
    slot: &'a Rc<Slot>,
    server: &'a ServerHandle,
    params: Box<Params>,
    output: Option<Output>,
    /// 8 bytes of room for a record header, then buffered payload.
    out: Vec<u8>,
    written: bool,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        conn: &'a Conn,
        slot: &'a Rc<Slot>,
        server: &'a ServerHandle,
        params: Box<Params>,
        output: Output,
    ) -> Request<'a> {
        Request {
            out: conn.take_out(),
            conn,
            slot,
            server,
            params,
            output: Some(output),
            written: false,
        }
    }

    /// The request's params: the CGI environment the web server sent.
    pub fn environ(&self) -> &Params {
        &self.params
    }

    /// One param as UTF-8, if present and valid.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get_str(name)
    }

    /// The server that runs this request.
    pub fn server(&self) -> &ServerHandle {
        self.server
    }

    /// The executor this request runs on (the seed's `get_loop()`): spawn
    /// tasks or blocking work on it.
    pub fn executor(&self) -> glommio::ExecutorProxy {
        glommio::executor()
    }

    /// The role the web server asked for.
    pub fn role(&self) -> Role {
        self.slot.role.get()
    }

    /// The FastCGI request id.
    pub fn request_id(&self) -> u16 {
        self.slot.request_id.get()
    }

    /// Whether the web server keeps the connection after this request.
    pub fn keep_conn(&self) -> bool {
        self.slot.keep_conn.get()
    }

    /// Whether the web server aborted the request: FCGI_ABORT_REQUEST, or
    /// the connection ended (not by this server's own read timeout).
    /// Updated while the handler runs.
    pub fn aborted(&self) -> bool {
        let input = self.slot.input.borrow();
        input.aborted
            || input
                .gone
                .is_some_and(|kind| kind != io::ErrorKind::TimedOut)
    }

    /// Waits until the request is aborted (see [`Request::aborted`]); race
    /// it against the handler's work to stop early.
    pub async fn wait_aborted(&self) {
        while !self.aborted() {
            self.slot.abort_signal.wait().await;
        }
    }

    /// Reads body bytes into `buf` as they arrive (the seed's `readinto`);
    /// 0 at the end of the body. An Authorizer's body is empty.
    pub async fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.slot.role.get().has_stdin() {
            return Ok(0);
        }
        self.read_stream(Kind::Stdin, buf).await
    }

    /// Reads up to `max` body bytes (the seed's `read(sz)`); empty at the end.
    pub async fn read(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; max];
        let n = self.read_into(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads the rest of the body (the seed's `readall`).
    pub async fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read_into(&mut buf).await?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads the Filter role's data stream (FCGI_DATA) into `buf`; 0 at its
    /// end. It follows the body: body bytes not read yet are skipped. Empty
    /// for other roles.
    pub async fn read_data_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.slot.role.get() != Role::Filter {
            return Ok(0);
        }
        while !self.slot.input.borrow().stdin_done {
            self.slot.drop_input(Kind::Stdin, self.conn);
            self.check_input()?;
            if !self.slot.input.borrow().stdin_done {
                self.slot.signal.wait().await;
            }
        }
        self.slot.drop_input(Kind::Stdin, self.conn);
        self.read_stream(Kind::Data, buf).await
    }

    async fn read_stream(&mut self, kind: Kind, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(n) = self.slot.take_input(kind, buf, self.conn) {
                return Ok(n);
            }
            let done = {
                let input = self.slot.input.borrow();
                match kind {
                    Kind::Stdin => input.stdin_done,
                    Kind::Data => input.data_done,
                }
            };
            if done {
                return Ok(0);
            }
            self.check_input()?;
            self.slot.signal.wait().await;
        }
    }

    /// Fails when no more input can come.
    fn check_input(&self) -> io::Result<()> {
        let input = self.slot.input.borrow();
        if input.aborted {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the web server aborted the request",
            ));
        }
        match input.gone {
            Some(kind) => Err(io::Error::new(kind, "the FastCGI connection ended")),
            None => Ok(()),
        }
    }

    /// Writes response bytes (FCGI_STDOUT). Small writes are buffered;
    /// large ones go out framed around the caller's slice.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.written |= !data.is_empty();
        if self.out.len() - HEADER_LEN + data.len() <= OUT_BUFFER {
            self.out.extend_from_slice(data);
            return Ok(());
        }
        self.flush().await?;
        if data.len() < OUT_BUFFER {
            self.out.extend_from_slice(data);
            return Ok(());
        }
        let frames = self.output_mut()?.stdout(data);
        for frame in frames {
            self.conn
                .write_locked(&mut frame.parts().map(IoSlice::new))
                .await?;
        }
        Ok(())
    }

    /// Lets `fill` write up to `room` bytes straight into the buffered
    /// output, and keeps the count it returns; on an error, nothing. The
    /// buffer may then be over its size: see [`Request::out_is_full`].
    pub(crate) fn append_with<E>(
        &mut self,
        room: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<(), E> {
        let start = self.out.len();
        self.out.resize(start + room, 0);
        match fill(&mut self.out[start..]) {
            Ok(n) => {
                self.out.truncate(start + n.min(room));
                self.written |= n > 0;
                Ok(())
            }
            Err(error) => {
                self.out.truncate(start);
                Err(error)
            }
        }
    }

    /// The buffered output reached its size: time to flush.
    pub(crate) fn out_is_full(&self) -> bool {
        self.out.len() - HEADER_LEN >= OUT_BUFFER
    }

    /// Sends the buffered response bytes now.
    pub async fn flush(&mut self) -> io::Result<()> {
        let payload_len = self.out.len() - HEADER_LEN;
        if payload_len == 0 {
            return Ok(());
        }
        if payload_len <= MAX_CONTENT_LEN {
            // The record is built in place: header in the room in front,
            // padding behind, one write.
            let record_len = self.frame_in_place()?;
            let result = self
                .conn
                .write_locked(&mut [IoSlice::new(&self.out[..record_len])])
                .await;
            self.out.truncate(HEADER_LEN);
            return result;
        }
        // A payload beyond one record (a large JSON body): record by record.
        let payload = std::mem::take(&mut self.out);
        let result = self.write_payload(&payload[HEADER_LEN..]).await;
        self.out = payload;
        self.out.truncate(HEADER_LEN);
        result
    }

    async fn write_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        let frames = self.output_mut()?.stdout(payload);
        for frame in frames {
            self.conn
                .write_locked(&mut frame.parts().map(IoSlice::new))
                .await?;
        }
        Ok(())
    }

    /// Writes `data` to the error stream (FCGI_STDERR), unbuffered.
    pub async fn write_err(&mut self, data: &[u8]) -> io::Result<()> {
        let frames = self.output_mut()?.stderr(data);
        for frame in frames {
            self.conn
                .write_locked(&mut frame.parts().map(IoSlice::new))
                .await?;
        }
        Ok(())
    }

    /// Whether any response bytes were written (buffered or sent).
    pub fn response_started(&self) -> bool {
        self.written
    }

    /// Appends bytes produced by a writer (JSON) to the response buffer.
    pub(crate) fn buffer_mut(&mut self) -> &mut Vec<u8> {
        self.written = true;
        &mut self.out
    }

    pub(crate) fn buffered(&self) -> usize {
        self.out.len() - HEADER_LEN
    }

    /// Whether response bytes reached the socket already.
    pub(crate) fn response_sent(&self) -> bool {
        self.output.as_ref().is_some_and(Output::stdout_used)
    }

    /// Drops buffered, unsent response bytes.
    pub(crate) fn discard_unsent(&mut self) {
        self.out.truncate(HEADER_LEN);
        self.written = false;
    }

    /// Puts the record header and padding around the buffered payload
    /// (at most one record's worth); returns the record's length.
    fn frame_in_place(&mut self) -> io::Result<usize> {
        let payload_len = self.out.len() - HEADER_LEN;
        let output = self
            .output
            .as_mut()
            .ok_or_else(|| io::Error::other("the request has ended"))?;
        let frame = output
            .stdout(&self.out[HEADER_LEN..])
            .next()
            .ok_or_else(|| io::Error::other("empty payload"))?;
        let header = *frame.header();
        let padding = frame.padding().len();
        self.out[..HEADER_LEN].copy_from_slice(&header);
        self.out.resize(HEADER_LEN + payload_len + padding, 0);
        Ok(self.out.len())
    }

    fn output_mut(&mut self) -> io::Result<&mut Output> {
        self.output
            .as_mut()
            .ok_or_else(|| io::Error::other("the request has ended"))
    }

    /// Ends the request: the buffered response, the empty STDOUT (and
    /// STDERR) and END_REQUEST, in one write.
    pub(crate) async fn finish(mut self, app_status: u32) -> io::Result<()> {
        let mut result = Ok(());
        let payload_len = self.out.len() - HEADER_LEN;
        // Where the bytes to send start in `out`: the in-place record, or
        // after the header room when there is no payload left to send.
        let start = if payload_len > MAX_CONTENT_LEN {
            result = self.flush().await;
            HEADER_LEN
        } else if payload_len > 0 {
            match self.frame_in_place() {
                Ok(_) => 0,
                Err(error) => {
                    result = Err(error);
                    HEADER_LEN
                }
            }
        } else {
            HEADER_LEN
        };
        let close = match self.output.take() {
            Some(output) => {
                let end = self
                    .conn
                    .state
                    .borrow_mut()
                    .core
                    .end_request(output, app_status);
                if result.is_ok() {
                    // The last record and the ending in one write.
                    self.out.extend_from_slice(end.as_bytes());
                    result = self
                        .conn
                        .write_locked(&mut [IoSlice::new(&self.out[start..])])
                        .await;
                }
                end.close_connection()
            }
            None => false,
        };
        let Request {
            conn,
            slot,
            params,
            out,
            ..
        } = self;
        conn.finish_slot(slot, params, out, close || result.is_err());
        result
    }
}
