//! CGI responses with the seed's `AsyncHttpResponseMixin` semantics, on top
//! of the core's response head.

use std::io;

use futures_lite::{Stream, StreamExt};
use serde::Serialize;
use simple_fastcgi_core::{EncodeError, HttpError, http};

use crate::request::Request;

/// A response body for [`Request::send_response`].
///
/// Implemented for bytes (`&[u8]`, `Vec<u8>`), text (`&str`, `String`),
/// [`Json`] values, [`Chunks`] of an async stream, `Option` of any of them,
/// and `()` for "no body".
pub trait Body {
    /// The content type used when `send_response` is given an empty one.
    fn content_type(&self) -> &'static str {
        http::DEFAULT_CONTENT_TYPE
    }

    /// Whether this is no body at all (the seed's `data=None`).
    fn is_none(&self) -> bool {
        false
    }

    /// Writes the body; with `flush`, stream bodies flush after each chunk.
    #[allow(
        async_fn_in_trait,
        reason = "bodies are written on one executor: no Send bound is wanted"
    )]
    async fn write_body(self, req: &mut Request<'_>, flush: bool) -> io::Result<()>;
}

/// A body serialized as JSON (compact); default content type
/// `application/json`.
#[derive(Debug, Clone, Copy)]
pub struct Json<T>(pub T);

/// A body written chunk by chunk from an async stream (the seed's async
/// generator), each chunk flushed when `send_response` gets `flush`.
#[derive(Debug, Clone)]
pub struct Chunks<S>(pub S);

impl Request<'_> {
    /// Writes a CGI response: `Status: <code> <reason>`, `Content-Type`
    /// (`text/*` gets `; charset=utf-8` unless it names a charset; empty
    /// means the body's default), `extra_headers`, a blank line, then
    /// `body`. An error status (400 and up) sent as `text/plain` with no body
    /// gets the status line as its body. With `flush` it is sent at once;
    /// later `write` calls append to the body. Header names and values with
    /// CR, LF or NUL are refused (`InvalidInput`).
    pub async fn send_response<B: Body>(
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
        self.write_encoded(|buf| http::encode_head(buf, code, mime_type, extra_headers))
            .await?;
        if body.is_none() {
            self.write_encoded(|buf| http::encode_default_body(buf, code, mime_type))
                .await?;
        } else {
            body.write_body(self, flush).await?;
        }
        if flush { self.flush().await } else { Ok(()) }
    }

    /// Writes a redirect: `Status: 302 Found` and `Location: <target>`, a
    /// local path or an absolute URL.
    pub async fn send_redirect(&mut self, target: &str) -> io::Result<()> {
        self.write_encoded(|buf| http::encode_redirect(buf, target))
            .await
    }

    /// Answers an Authorizer request with `200 OK`, passing each
    /// `(name, value)` to the web server as a `Variable-<name>` header.
    pub async fn authorize(&mut self, variables: &[(&str, &str)]) -> io::Result<()> {
        let names: Vec<String> = variables
            .iter()
            .map(|(name, _)| format!("Variable-{name}"))
            .collect();
        let headers: Vec<(&str, &str)> = names
            .iter()
            .zip(variables)
            .map(|(name, (_, value))| (name.as_str(), *value))
            .collect();
        self.send_response(200, "", "", &headers, false).await
    }

    async fn write_encoded(
        &mut self,
        encode: impl Fn(&mut [u8]) -> Result<usize, HttpError>,
    ) -> io::Result<()> {
        // Straight into the output buffer: a buffer of its own, held across
        // the write's await, would make every connection's task that much
        // bigger (its memory is all touched when the task is made).
        match self.append_with(HEAD_ROOM, &encode) {
            Ok(()) if self.out_is_full() => self.flush().await,
            Ok(()) => Ok(()),
            Err(HttpError::Encode(EncodeError::BufferTooSmall { required })) => {
                let mut heap = vec![0u8; required];
                let n = encode(&mut heap).map_err(invalid_input)?;
                self.write(&heap[..n]).await
            }
            Err(error) => Err(invalid_input(error)),
        }
    }
}

/// Room a response head gets in the output buffer; a larger one is encoded
/// on the heap.
const HEAD_ROOM: usize = 1024;

fn invalid_input(error: HttpError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

impl Body for () {
    fn is_none(&self) -> bool {
        true
    }

    async fn write_body(self, _req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
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

    async fn write_body(self, req: &mut Request<'_>, flush: bool) -> io::Result<()> {
        match self {
            Some(body) => body.write_body(req, flush).await,
            None => Ok(()),
        }
    }
}

impl Body for &[u8] {
    async fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write(self).await
    }
}

impl<const N: usize> Body for &[u8; N] {
    async fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write(self).await
    }
}

impl Body for Vec<u8> {
    async fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write(&self).await
    }
}

impl Body for &str {
    async fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write(self.as_bytes()).await
    }
}

impl Body for String {
    async fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        req.write(self.as_bytes()).await
    }
}

impl<T: Serialize> Body for Json<T> {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    async fn write_body(self, req: &mut Request<'_>, _flush: bool) -> io::Result<()> {
        // Serialized straight into the response buffer; flushed when big.
        serde_json::to_writer(req.buffer_mut(), &self.0).map_err(io::Error::from)?;
        if req.buffered() > 16 * 1024 {
            req.flush().await?;
        }
        Ok(())
    }
}

impl<S> Body for Chunks<S>
where
    S: Stream + Unpin,
    S::Item: AsRef<[u8]>,
{
    async fn write_body(mut self, req: &mut Request<'_>, flush: bool) -> io::Result<()> {
        while let Some(chunk) = self.0.next().await {
            req.write(chunk.as_ref()).await?;
            if flush {
                req.flush().await?;
            }
        }
        Ok(())
    }
}
