//! Errors, split by who is at fault.
//!
//! - [`ProtocolError`]: the peer broke the FastCGI protocol. The connection
//!   cannot continue; the runtime closes it (other connections are unaffected).
//! - [`ParamsError`]: one request's params hit a configured limit or held a
//!   malformed pair. Only that request fails; the runtime answers it with
//!   [`ParamsError::http_status`] and the connection goes on.
//! - [`EncodeError`]: the caller's output buffer is too small, or a value is
//!   too long for the wire format.
//! - [`HttpError`]: the caller asked for a response head that would be invalid
//!   or unsafe (header injection, a bad status or `Location`).

use crate::header::RecordType;

/// The peer sent bytes that break the FastCGI protocol.
///
/// Every variant is fatal for the connection it happened on: framing can no
/// longer be trusted, so the runtime logs it and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProtocolError {
    /// The record header's version byte is not `FCGI_VERSION_1` (spec 3.3).
    #[error("unsupported FastCGI version {0} (only version 1 is defined)")]
    UnsupportedVersion(u8),
    /// A discrete record's body does not have the length the spec gives it.
    #[error(
        "{record_type:?} record for request {request_id} has a {length}-byte body, expected {expected}"
    )]
    BodyLength {
        /// The record's type.
        record_type: RecordType,
        /// The record's request id.
        request_id: u16,
        /// The content length the peer sent.
        length: u16,
        /// The content length the spec requires.
        expected: u16,
    },
    /// FCGI_BEGIN_REQUEST for a request id that is already active (spec 3.3,
    /// "Managing Request IDs").
    #[error("BEGIN_REQUEST for request {0}, which is already active")]
    DuplicateRequest(u16),
    /// A stream record arrived out of order for an active request: STDIN before
    /// the PARAMS stream ended, PARAMS after it ended, DATA before STDIN ended,
    /// or any stream after it ended (spec 6.1, sequential marshalling).
    #[error("{record_type:?} record for request {request_id} out of order")]
    UnexpectedRecord {
        /// The record's type.
        record_type: RecordType,
        /// The record's request id.
        request_id: u16,
    },
    /// An FCGI_GET_VALUES body ended in the middle of a name-value pair.
    #[error("GET_VALUES body ends in the middle of a name-value pair")]
    TruncatedGetValues,
}

/// One request's params could not be stored.
///
/// The request is refused, not the connection: answer it with
/// [`ParamsError::http_status`] and end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParamsError {
    /// The names and values together need more bytes than the arena holds.
    #[error("params need {required} bytes, the limit is {capacity}")]
    TooLarge {
        /// Bytes the arena would need (saturating).
        required: usize,
        /// The arena's capacity in bytes.
        capacity: usize,
    },
    /// More name-value pairs than the arena's index holds.
    #[error("more than {capacity} params")]
    TooMany {
        /// The arena's capacity in pairs.
        capacity: usize,
    },
    /// A pair has an empty name.
    #[error("a param has an empty name")]
    EmptyName,
    /// The PARAMS stream ended in the middle of a name-value pair.
    #[error("the params stream ends in the middle of a name-value pair")]
    Truncated,
}

impl ParamsError {
    /// The HTTP status a runtime answers the request with: `431 Request Header
    /// Fields Too Large` for a limit, `400 Bad Request` for a malformed pair.
    pub const fn http_status(&self) -> u16 {
        match self {
            ParamsError::TooLarge { .. } | ParamsError::TooMany { .. } => 431,
            ParamsError::EmptyName | ParamsError::Truncated => 400,
        }
    }
}

/// A value could not be encoded into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; `required` bytes are needed in all.
    #[error("output buffer too small: {required} bytes required")]
    BufferTooSmall {
        /// The total number of bytes the encoding needs.
        required: usize,
    },
    /// A length does not fit the wire format (a name or value longer than
    /// 2^31 - 1 bytes, or record content longer than 65535 bytes).
    #[error("length {length} exceeds the wire format's maximum of {max}")]
    TooLong {
        /// The length that was asked for.
        length: usize,
        /// The largest length the format can carry.
        max: usize,
    },
}

/// A CGI response head could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HttpError {
    /// The status code is not three digits (100..=999).
    #[error("status {0} is not a three-digit HTTP status code")]
    InvalidStatus(u16),
    /// A header name is empty or has a byte outside RFC 9110's `tchar`.
    #[error("invalid header name")]
    InvalidHeaderName,
    /// A header value or content type holds CR, LF, NUL or another control
    /// byte (which would allow response splitting).
    #[error("invalid header value (control bytes such as CR, LF or NUL are refused)")]
    InvalidHeaderValue,
    /// A redirect target is neither a local path (`/path?query`) nor an
    /// absolute URL (`scheme:...`), or holds spaces or control bytes.
    #[error("invalid Location: neither a local path nor an absolute URL")]
    InvalidLocation,
    /// The output buffer is too small.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A JSON body could not be encoded.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum JsonError {
    /// The head could not be written.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// serde-json-core refused the value or ran out of buffer.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json_core::ser::Error),
}
