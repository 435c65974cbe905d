//! JSON response bodies through `serde-json-core`, into caller buffers
//! (feature `json`).

use serde::Serialize;

use crate::error::JsonError;
use crate::http::encode_head;

/// The content type of JSON responses.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Writes `value` as JSON into `out`, returning the number of bytes written.
pub fn encode_json<T: Serialize + ?Sized>(out: &mut [u8], value: &T) -> Result<usize, JsonError> {
    Ok(serde_json_core::to_slice(value, out)?)
}

/// Writes a whole JSON response: the head (`Content-Type: application/json`
/// and `extra_headers`) followed by `value`. Returns the number of bytes
/// written.
///
/// ```
/// use simple_fastcgi_core::json::encode_json_response;
///
/// #[derive(serde::Serialize)]
/// struct Reply<'a> { ok: bool, name: &'a str }
///
/// let mut buf = [0u8; 128];
/// let n = encode_json_response(&mut buf, 200, &Reply { ok: true, name: "x" }, &[])?;
/// assert_eq!(
///     &buf[..n],
///     &b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\":true,\"name\":\"x\"}"[..]
/// );
/// # Ok::<(), simple_fastcgi_core::JsonError>(())
/// ```
pub fn encode_json_response<T: Serialize + ?Sized>(
    out: &mut [u8],
    status: u16,
    value: &T,
    extra_headers: &[(&str, &str)],
) -> Result<usize, JsonError> {
    let head = encode_head(out, status, JSON_CONTENT_TYPE, extra_headers)?;
    let body = encode_json(&mut out[head..], value)?;
    Ok(head + body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EncodeError, HttpError};

    #[derive(Serialize)]
    struct Entry<'a> {
        name: &'a str,
        size: u64,
        kind: Option<&'a str>,
    }

    #[test]
    fn encodes_a_struct() {
        let mut buf = [0u8; 64];
        let n = encode_json(
            &mut buf,
            &Entry {
                name: "a \"b\"",
                size: 12,
                kind: None,
            },
        )
        .unwrap();
        assert_eq!(&buf[..n], br#"{"name":"a \"b\"","size":12,"kind":null}"#);
    }

    #[test]
    fn buffer_full_is_an_error() {
        let mut buf = [0u8; 8];
        assert_eq!(
            encode_json(&mut buf, &["long", "list"]),
            Err(JsonError::Json(serde_json_core::ser::Error::BufferFull))
        );
        assert!(matches!(
            encode_json_response(&mut buf, 200, &1, &[]),
            Err(JsonError::Http(HttpError::Encode(
                EncodeError::BufferTooSmall { .. }
            )))
        ));
    }
}
