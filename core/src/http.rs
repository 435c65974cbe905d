//! The CGI/HTTP response head (RFC 3875 section 6), written into a caller
//! buffer, with the seed's `HttpResponseMixin` rules.
//!
//! ```text
//! Status: 404 Not Found\r\n
//! Content-Type: text/plain; charset=utf-8\r\n
//! X-Extra: value\r\n
//! \r\n
//! ```
//!
//! - The reason phrase comes from IANA's HTTP Status Code Registry; a code the
//!   registry does not name is sent as the number alone.
//! - A `text/*` content type without a charset gets `; charset=utf-8`.
//! - An error (status 400 and up) sent as `text/plain` with no body gets the
//!   status line as its body ([`encode_default_body`]).
//! - Header names must be RFC 9110 tokens; values must not hold CR, LF, NUL
//!   or other control bytes: response splitting is refused with an error.
//! - Redirects ([`encode_redirect`]) are `Status: 302 Found` and `Location`,
//!   to a local path (`/path?query`) or an absolute URL (`https://...`). A
//!   bare `Location` (RFC 3875's redirect responses, and the Python seed's)
//!   is not portable: nginx and lighttpd turn it into a 302, but Apache's
//!   mod_proxy_fcgi answers `200 OK`, and none of the three performs the
//!   internal redirect RFC 3875 describes for a local path.

use crate::error::{EncodeError, HttpError};

/// The content type used when none is given.
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// The reason phrase IANA registers for `status`, if any.
///
/// ```
/// use simple_fastcgi_core::http::reason_phrase;
///
/// assert_eq!(reason_phrase(404), Some("Not Found"));
/// assert_eq!(reason_phrase(599), None);
/// ```
pub const fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        104 => "Upload Resumption Supported",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        // 306 and 418 are registered as "(Unused)": no phrase.
        _ => return None,
    })
}

/// Writes the response head: `Status`, `Content-Type`, `extra_headers` and
/// the blank line. An empty `content_type` means [`DEFAULT_CONTENT_TYPE`].
/// Returns the number of bytes written.
///
/// ```
/// use simple_fastcgi_core::http::encode_head;
///
/// let mut buf = [0u8; 128];
/// let n = encode_head(&mut buf, 201, "text/html", &[("Location", "/items/7")])?;
/// assert_eq!(
///     &buf[..n],
///     b"Status: 201 Created\r\nContent-Type: text/html; charset=utf-8\r\nLocation: /items/7\r\n\r\n"
/// );
/// # Ok::<(), simple_fastcgi_core::HttpError>(())
/// ```
pub fn encode_head(
    out: &mut [u8],
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
) -> Result<usize, HttpError> {
    check_status(status)?;
    let content_type = if content_type.is_empty() {
        DEFAULT_CONTENT_TYPE
    } else {
        content_type
    };
    check_value(content_type)?;
    for (name, value) in extra_headers {
        check_header(name, value)?;
    }
    let mut w = Writer::new(out);
    w.put(b"Status: ");
    put_status(&mut w, status);
    w.put(b"\r\nContent-Type: ");
    w.put(content_type.as_bytes());
    if needs_charset(content_type) {
        w.put(b"; charset=utf-8");
    }
    w.put(b"\r\n");
    for (name, value) in extra_headers {
        w.put(name.as_bytes());
        w.put(b": ");
        w.put(value.as_bytes());
        w.put(b"\r\n");
    }
    w.put(b"\r\n");
    Ok(w.finish()?)
}

/// Whether a response with no body gets a default one: an error status (400
/// and up) sent as plain text (an empty `content_type` counts as plain text).
pub fn has_default_body(status: u16, content_type: &str) -> bool {
    status >= 400 && (content_type.is_empty() || content_type == DEFAULT_CONTENT_TYPE)
}

/// Writes the default body of a response that has none: the status line, such
/// as `404 Not Found\r\n`, when [`has_default_body`] says so, and nothing
/// otherwise. Returns the number of bytes written.
pub fn encode_default_body(
    out: &mut [u8],
    status: u16,
    content_type: &str,
) -> Result<usize, HttpError> {
    if !has_default_body(status, content_type) {
        return Ok(0);
    }
    check_status(status)?;
    let mut w = Writer::new(out);
    put_status(&mut w, status);
    w.put(b"\r\n");
    Ok(w.finish()?)
}

/// Writes a redirect: `Status: 302 Found`, `Location: <target>` and the
/// blank line. `target` is a local path starting with a single `/`, or an
/// absolute URL with a scheme. (Why the status is explicit: see the module
/// docs.)
///
/// ```
/// use simple_fastcgi_core::http::encode_redirect;
///
/// let mut buf = [0u8; 64];
/// let n = encode_redirect(&mut buf, "https://example.com/")?;
/// assert_eq!(&buf[..n], b"Status: 302 Found\r\nLocation: https://example.com/\r\n\r\n");
/// assert!(encode_redirect(&mut buf, "/ok\r\nSet-Cookie: x").is_err());
/// # Ok::<(), simple_fastcgi_core::HttpError>(())
/// ```
pub fn encode_redirect(out: &mut [u8], target: &str) -> Result<usize, HttpError> {
    check_location(target)?;
    let mut w = Writer::new(out);
    w.put(b"Status: 302 Found\r\nLocation: ");
    w.put(target.as_bytes());
    w.put(b"\r\n\r\n");
    Ok(w.finish()?)
}

/// Checks one response header: the name must be an RFC 9110 token, the value
/// free of control bytes other than tab.
pub fn check_header(name: &str, value: &str) -> Result<(), HttpError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(HttpError::InvalidHeaderName);
    }
    check_value(value)
}

/// Checks a redirect target (see [`encode_redirect`]).
pub fn check_location(target: &str) -> Result<(), HttpError> {
    let bytes = target.as_bytes();
    if bytes.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::InvalidLocation);
    }
    let local = bytes.first() == Some(&b'/') && bytes.get(1) != Some(&b'/');
    if local || has_scheme(bytes) {
        Ok(())
    } else {
        Err(HttpError::InvalidLocation)
    }
}

fn check_status(status: u16) -> Result<(), HttpError> {
    if (100..=999).contains(&status) {
        Ok(())
    } else {
        Err(HttpError::InvalidStatus(status))
    }
}

fn check_value(value: &str) -> Result<(), HttpError> {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
    {
        Ok(())
    } else {
        Err(HttpError::InvalidHeaderValue)
    }
}

/// `scheme ":"` with scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn has_scheme(bytes: &[u8]) -> bool {
    let Some(colon) = bytes.iter().position(|&b| b == b':') else {
        return false;
    };
    let scheme = &bytes[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn needs_charset(content_type: &str) -> bool {
    let bytes = content_type.as_bytes();
    let text = bytes.len() >= 5 && bytes[..5].eq_ignore_ascii_case(b"text/");
    let has_charset = bytes
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"charset="));
    text && !has_charset
}

/// `404 Not Found`, or `599` for a code without a phrase.
fn put_status(w: &mut Writer<'_>, status: u16) {
    // Three digits: checked by the callers.
    let digits = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    w.put(&digits);
    if let Some(phrase) = reason_phrase(status) {
        w.put(b" ");
        w.put(phrase.as_bytes());
    }
}

/// Appends to a slice, counting what would have been needed when it is full.
struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Writer { out, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.out.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.len += bytes.len();
    }

    fn finish(self) -> Result<usize, EncodeError> {
        if self.len <= self.out.len() {
            Ok(self.len)
        } else {
            Err(EncodeError::BufferTooSmall { required: self.len })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, content_type: &str, headers: &[(&str, &str)]) -> heapless::String<256> {
        let mut buf = [0u8; 256];
        let n = encode_head(&mut buf, status, content_type, headers).unwrap();
        heapless::String::try_from(core::str::from_utf8(&buf[..n]).unwrap()).unwrap()
    }

    #[test]
    fn status_and_default_content_type() {
        assert_eq!(
            head(200, "", &[]),
            "Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        );
        assert_eq!(
            head(404, "text/plain", &[]),
            "Status: 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        );
    }

    #[test]
    fn unknown_codes_are_sent_as_the_number() {
        assert_eq!(
            head(599, "application/json", &[]),
            "Status: 599\r\nContent-Type: application/json\r\n\r\n"
        );
        assert!(head(418, "application/json", &[]).starts_with("Status: 418\r\n"));
        assert!(head(306, "application/json", &[]).starts_with("Status: 306\r\n"));
    }

    #[test]
    fn charset_rule() {
        assert!(head(200, "text/html", &[]).contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(
            head(200, "text/html; charset=latin1", &[])
                .contains("Content-Type: text/html; charset=latin1\r\n")
        );
        assert!(
            head(200, "TEXT/CSV;Charset=UTF-8", &[])
                .contains("Content-Type: TEXT/CSV;Charset=UTF-8\r\n")
        );
        assert!(
            head(200, "application/x-ndjson", &[])
                .contains("Content-Type: application/x-ndjson\r\n")
        );
    }

    #[test]
    fn extra_headers_in_order() {
        assert_eq!(
            head(
                302,
                "text/plain",
                &[("Location", "/a"), ("Set-Cookie", "k=v; Path=/")]
            ),
            "Status: 302 Found\r\nContent-Type: text/plain; charset=utf-8\r\nLocation: /a\r\nSet-Cookie: k=v; Path=/\r\n\r\n"
        );
    }

    #[test]
    fn response_splitting_is_refused() {
        let mut buf = [0u8; 256];
        for value in [
            "a\r\nSet-Cookie: x",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\x1bb",
            "a\x7fb",
        ] {
            assert_eq!(
                encode_head(&mut buf, 200, "text/plain", &[("X", value)]),
                Err(HttpError::InvalidHeaderValue),
                "{value:?}"
            );
            assert_eq!(
                encode_head(&mut buf, 200, value, &[]),
                Err(HttpError::InvalidHeaderValue)
            );
        }
        for name in ["", "X Y", "X:", "X\r\n", "Ä"] {
            assert_eq!(
                encode_head(&mut buf, 200, "text/plain", &[(name, "v")]),
                Err(HttpError::InvalidHeaderName),
                "{name:?}"
            );
        }
        assert!(check_header("X-Tab", "a\tb").is_ok());
        assert!(check_header("X-Utf8", "grüße").is_ok());
    }

    #[test]
    fn invalid_status_is_refused() {
        let mut buf = [0u8; 256];
        for status in [0, 99, 1000, u16::MAX] {
            assert_eq!(
                encode_head(&mut buf, status, "", &[]),
                Err(HttpError::InvalidStatus(status))
            );
        }
    }

    #[test]
    fn short_buffer_reports_the_required_size() {
        let mut buf = [0u8; 10];
        let full = head(200, "", &[]).len();
        assert_eq!(
            encode_head(&mut buf, 200, "", &[]),
            Err(HttpError::Encode(EncodeError::BufferTooSmall {
                required: full
            }))
        );
    }

    #[test]
    fn default_body_for_errors_in_plain_text() {
        let mut buf = [0u8; 64];
        let n = encode_default_body(&mut buf, 404, "text/plain").unwrap();
        assert_eq!(&buf[..n], b"404 Not Found\r\n");
        let n = encode_default_body(&mut buf, 599, "").unwrap();
        assert_eq!(&buf[..n], b"599\r\n");
        assert_eq!(encode_default_body(&mut buf, 200, "text/plain"), Ok(0));
        assert_eq!(encode_default_body(&mut buf, 399, "text/plain"), Ok(0));
        assert_eq!(encode_default_body(&mut buf, 500, "text/html"), Ok(0));
        assert_eq!(
            encode_default_body(&mut buf, 500, "application/json"),
            Ok(0)
        );
        assert!(has_default_body(400, ""));
        assert!(!has_default_body(400, "text/html"));
    }

    #[test]
    fn redirects() {
        let mut buf = [0u8; 128];
        let n = encode_redirect(&mut buf, "/local/path?q=1").unwrap();
        assert_eq!(
            &buf[..n],
            b"Status: 302 Found\r\nLocation: /local/path?q=1\r\n\r\n"
        );
        let n = encode_redirect(&mut buf, "http://example.com/x").unwrap();
        assert_eq!(
            &buf[..n],
            b"Status: 302 Found\r\nLocation: http://example.com/x\r\n\r\n"
        );
        for ok in [
            "/",
            "https://h/",
            "mailto:a@b",
            "coap+tcp://h",
            "/caf\u{e9}",
        ] {
            assert!(check_location(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "relative",
            "//evil.example/",
            "1http://h",
            "/a b",
            "/a\r\nX: y",
            "/\0",
            ":x",
        ] {
            assert_eq!(
                check_location(bad),
                Err(HttpError::InvalidLocation),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_phrase_is_header_safe() {
        for status in 100..=999 {
            if let Some(phrase) = reason_phrase(status) {
                assert!(check_value(phrase).is_ok());
                assert!(!phrase.is_empty());
            }
        }
        assert_eq!(reason_phrase(413), Some("Content Too Large"));
        assert_eq!(reason_phrase(422), Some("Unprocessable Content"));
        assert_eq!(reason_phrase(431), Some("Request Header Fields Too Large"));
    }
}
