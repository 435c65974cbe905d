//! CGI responses with the seed's `HttpResponseMixin` semantics, on top of the
//! core's response head.

use std::io::{self, Write};

use serde::Serialize;
use simple_fastcgi_core::{EncodeError, HttpError, http};

use crate::request::Request;

/// A response body for [`Request::send_response`].
///
/// Implemented for bytes (`&[u8]`, `Vec<u8>`), text (`&str`, `String`),
/// [`Json`] values, [`Chunks`] of an iterator, `Option` of any of them, and
/// `()` for "no body".
pub trait Body {
    /// The content type used when `send_response` is given an empty one.
    fn content_type(&self) -> &'static str {
        http::DEFAULT_CONTENT_TYPE
    }

    /// Whether this is no body at all (the seed's `data=None`): an error
    /// status sent as plain text then gets the status line as its body.
    fn is_none(&self) -> bool {
        false
    }

    /// Writes the body; with `flush`, chunked bodies flush after each chunk.
    fn write_body(self, req: &mut Request<'_>, flush: bool) -> io::Result<()>;
}

/// A body serialized as JSON (with `serde_json`, compact); its default
/// content type is `application/json`.
#[derive(Debug, Clone, Copy)]
pub struct Json<T>(pub T);

/// A body written chunk by chunk from an iterator, each chunk flushed when
/// `send_response` is called with `flush` (the seed's generator bodies).
#[derive(Debug, Clone)]
pub struct Chunks<I>(pub I);

impl Request<'_> {
    /// Writes a CGI response: `Status: <code> <reason>`, `Content-Type`
    /// (`text/*` gets `; charset=utf-8` unless it names a charset; empty
    /// means the body's default, `text/plain` or `application/json`), the
    /// `extra_headers`, a blank line, then `body`. An error status (400 and
    /// up) sent as `text/plain` with no body (`()`) gets the status line as
    /// its body. With `flush` the response is sent at once (and a [`Chunks`]
    /// body chunk by chunk); without it, it is sent when the buffer fills or
    /// the request ends.
    ///
    /// Later `write` calls append to the body. No `Content-Length` is added.
    /// Header names and values with CR, LF or NUL are refused
    /// (`InvalidInput`), so nothing from a request can split the response.
    ///
    /// ```no_run
    /// # use simple_fastcgi_std::{Json, Request};
    /// # fn handle(req: &mut Request<'_>) -> std::io::Result<()> {
    /// req.send_response(200, "text/html", "<p>hello</p>", &[("Cache-Control", "no-store")], false)?;
    /// # Ok(()) }
    /// # fn json(req: &mut Request<'_>) -> std::io::Result<()> {
    /// req.send_response(201, "", Json(serde_json::json!({"id": 7})), &[], true)?;
    /// # Ok(()) }
    /// # fn missing(req: &mut Request<'_>) -> std::io::Result<()> {
    /// req.send_response(404, "", (), &[], true)?; // body: "404 Not Found\r\n"
    /// # Ok(()) }
    /// ```
    pub fn send_response<B: Body>(
        &mut self,
        code: u16,
        mime_type: &str,
        body: B,
        extra_headers: &[(&str, &str)],
        flush: bool,
    ) -> io::Result<()> {
        let mime_type = if mime_type.is_empty() {
            body.content_type()
        } else {
            mime_type
        };
        self.write_encoded(|buf| http::encode_head(buf, code, mime_type, extra_headers))?;
        if body.is_none() {
            self.write_encoded(|buf| http::encode_default_body(buf, code, mime_type))?;
        } else {
            body.write_body(self, flush)?;
        }
        if flush { self.flush() } else { Ok(()) }
    }

    /// Writes a CGI redirect: `Location: <target>` alone. A local path
    /// (`/path?query`) asks the web server to serve that path instead (where
    /// it supports local redirects); an absolute URL (`https://...`) is sent
    /// to the client as a redirect.
    pub fn send_redirect(&mut self, target: &str) -> io::Result<()> {
        self.write_encoded(|buf| http::encode_redirect(buf, target))
    }

    /// Answers an Authorizer request with `200 OK`: access allowed, and each
    /// `(name, value)` passed to the web server as a `Variable-<name>` header
    /// (spec 6.3).
    pub fn authorize(&mut self, variables: &[(&str, &str)]) -> io::Result<()> {
        let headers: Vec<(String, &str)> = variables
            .iter()
            .map(|(name, value)| (format!("Variable-{name}"), *value))
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        self.send_response(200, "", "", &headers, false)
    }

    /// Runs an encoder of the core into a stack buffer (a heap one when the
    /// head is larger) and writes the result.
    fn write_encoded(
        &mut self,
        encode: impl Fn(&mut [u8]) -> Result<usize, HttpError>,
    ) -> io::Result<()> {
        let mut stack = [0u8; 1024];
        match encode(&mut stack) {
            Ok(n) => self.write_all(&stack[..n]),
            Err(HttpError::Encode(EncodeError::BufferTooSmall { required })) => {
                let mut heap = vec![0u8; required];
                let n = encode(&mut heap).map_err(invalid_input)?;
                self.write_all(&heap[..n])
            }
            Err(error) => Err(invalid_input(error)),
        }
    }
}

fn invalid_input(error: HttpError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

impl Body for () {
    fn is_none(&self) -> bool {
        true
    }

    fn write_body(self, _req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        Ok(())
    }
}

impl<B: Body> Body for Option<B> {
    fn content_type(&self) -> &'static str {
        self.as_ref()
            .map_or(http::DEFAULT_CONTENT_TYPE, Body::content_type)
    }

    fn is_none(&self) -> bool {
        self.as_ref().is_none_or(Body::is_none)
    }

    fn write_body(self, req: &mut Request<'_>, flush: bool) -> io::Result<()> {
        match self {
            Some(body) => body.write_body(req, flush),
            None => Ok(()),
        }
    }
}

impl Body for &[u8] {
    fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write_all(self)
    }
}

impl<const N: usize> Body for &[u8; N] {
    fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write_all(self)
    }
}

impl Body for Vec<u8> {
    fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write_all(&self)
    }
}

impl Body for &str {
    fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write_all(self.as_bytes())
    }
}

impl Body for String {
    fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write_all(self.as_bytes())
    }
}

impl<T: Serialize> Body for Json<T> {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        serde_json::to_writer(&mut *req, &self.0).map_err(io::Error::from)
    }
}

impl<I> Body for Chunks<I>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    fn write_body(self, req: &mut Request<'_>, flush: bool) -> io::Result<()> {
        for chunk in self.0 {
            req.write_all(chunk.as_ref())?;
            if flush {
                req.flush()?;
            }
        }
        Ok(())
    }
}
