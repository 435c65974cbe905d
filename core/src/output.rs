//! Response framing without allocation (spec 5.3, 5.5, 6.1).
//!
//! A request's output is its FCGI_STDOUT stream, optionally its FCGI_STDERR
//! stream, and one FCGI_END_REQUEST. [`Output`] frames payloads into records
//! of at most 65535 content bytes, each padded to a multiple of eight. A
//! [`Frame`] hands out its header and padding separately from the payload, so
//! a runtime writes header + the caller's own slice + padding with one
//! vectored write and never copies the payload.
//!
//! The empty records that end the streams and the END_REQUEST come from
//! [`Connection::end_request`](crate::Connection::end_request), which takes
//! the `Output` by value: a request cannot be ended twice.

use crate::end_request::{EndRequestBody, ProtocolStatus};
use crate::error::EncodeError;
use crate::header::{HEADER_LEN, Header, MAX_CONTENT_LEN, PADDING, RecordType};

/// The largest bytes of an ending: empty STDOUT, empty STDERR, END_REQUEST.
const END_LEN: usize = HEADER_LEN + HEADER_LEN + HEADER_LEN + EndRequestBody::LEN;

/// The output side of one request: frames its STDOUT and STDERR streams.
///
/// Only a [`Connection`](crate::Connection) makes one, in the
/// [`Event::Begin`](crate::Event::Begin) that starts the request, and only
/// [`Connection::end_request`](crate::Connection::end_request) consumes it.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Output {
    request_id: u16,
    stdout_used: bool,
    stderr_used: bool,
}

/// One record of framed output: header, payload and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'p> {
    header: [u8; HEADER_LEN],
    payload: &'p [u8],
    padding: &'static [u8],
}

/// The records that carry a payload: an iterator of [`Frame`]s of at most
/// 65535 payload bytes each. An empty payload gives no frames (an empty
/// record would end the stream).
#[derive(Debug, Clone)]
pub struct Frames<'p> {
    record_type: RecordType,
    request_id: u16,
    rest: &'p [u8],
}

/// The bytes that end a request: the empty STDOUT record, the empty STDERR
/// record when STDERR was used, and FCGI_END_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndRequest {
    bytes: [u8; END_LEN],
    len: usize,
    close_connection: bool,
}

impl Output {
    pub(crate) const fn new(request_id: u16) -> Self {
        Output {
            request_id,
            stdout_used: false,
            stderr_used: false,
        }
    }

    /// The request this output belongs to.
    pub const fn request_id(&self) -> u16 {
        self.request_id
    }

    /// Frames `payload` as FCGI_STDOUT records.
    pub fn stdout<'p>(&mut self, payload: &'p [u8]) -> Frames<'p> {
        self.stdout_used |= !payload.is_empty();
        Frames::new(RecordType::Stdout, self.request_id, payload)
    }

    /// Frames `payload` as FCGI_STDERR records.
    pub fn stderr<'p>(&mut self, payload: &'p [u8]) -> Frames<'p> {
        self.stderr_used |= !payload.is_empty();
        Frames::new(RecordType::Stderr, self.request_id, payload)
    }

    /// Whether any STDOUT payload has been framed (the response has begun).
    pub const fn stdout_used(&self) -> bool {
        self.stdout_used
    }

    /// Builds the ending. With `RequestComplete` the streams are ended first;
    /// a refusal (any other status) before any output is the END_REQUEST
    /// alone, as the spec's rejections are.
    pub(crate) fn end(
        self,
        app_status: u32,
        protocol_status: ProtocolStatus,
        close_connection: bool,
    ) -> EndRequest {
        let mut bytes = [0u8; END_LEN];
        let mut len = 0;
        let complete = protocol_status == ProtocolStatus::RequestComplete;
        if complete || self.stdout_used || self.stderr_used {
            let empty = Header::new(RecordType::Stdout, self.request_id, 0).to_bytes();
            bytes[len..len + HEADER_LEN].copy_from_slice(&empty);
            len += HEADER_LEN;
            if self.stderr_used {
                let empty = Header::new(RecordType::Stderr, self.request_id, 0).to_bytes();
                bytes[len..len + HEADER_LEN].copy_from_slice(&empty);
                len += HEADER_LEN;
            }
        }
        let end = EndRequestBody {
            app_status,
            protocol_status,
        }
        .record(self.request_id);
        bytes[len..len + end.len()].copy_from_slice(&end);
        len += end.len();
        EndRequest {
            bytes,
            len,
            close_connection,
        }
    }
}

impl<'p> Frame<'p> {
    /// The record header (8 bytes).
    pub const fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The payload, borrowed from the caller.
    pub const fn payload(&self) -> &'p [u8] {
        self.payload
    }

    /// The padding after the payload (0 to 7 zero bytes).
    pub const fn padding(&self) -> &'static [u8] {
        self.padding
    }

    /// Header, payload and padding, in order, for a vectored write.
    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.header, self.payload, self.padding]
    }

    /// The record's length on the wire.
    pub const fn len(&self) -> usize {
        HEADER_LEN + self.payload.len() + self.padding.len()
    }

    /// Always false: a frame has at least its header.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Copies the whole record into the front of `out` (for runtimes that
    /// write from one buffer), returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let total = self.len();
        let out = out
            .get_mut(..total)
            .ok_or(EncodeError::BufferTooSmall { required: total })?;
        let mut at = 0;
        for part in self.parts() {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Ok(total)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Frame<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Frame {{ header: {=[u8]}, payload: {} bytes }}",
            &self.header[..],
            self.payload.len()
        );
    }
}

impl<'p> Frames<'p> {
    /// Frames `payload` as records of `record_type` for `request_id`.
    pub const fn new(record_type: RecordType, request_id: u16, payload: &'p [u8]) -> Self {
        Frames {
            record_type,
            request_id,
            rest: payload,
        }
    }

    /// The number of bytes all remaining frames take on the wire.
    pub fn wire_len(&self) -> usize {
        self.clone().map(|frame| frame.len()).sum()
    }
}

impl<'p> Iterator for Frames<'p> {
    type Item = Frame<'p>;

    fn next(&mut self) -> Option<Frame<'p>> {
        if self.rest.is_empty() {
            return None;
        }
        let take = self.rest.len().min(MAX_CONTENT_LEN);
        let (payload, rest) = self.rest.split_at(take);
        self.rest = rest;
        let length = u16::try_from(take).unwrap_or(u16::MAX); // take <= MAX_CONTENT_LEN
        let header = Header::new(self.record_type, self.request_id, length);
        Some(Frame {
            header: header.to_bytes(),
            payload,
            padding: &PADDING[..usize::from(header.padding_length)],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let count = self.rest.len().div_ceil(MAX_CONTENT_LEN);
        (count, Some(count))
    }
}

impl ExactSizeIterator for Frames<'_> {}

impl EndRequest {
    /// The bytes to write, after all of the request's output.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether the connection must be closed once these bytes are written
    /// (the request did not ask for FCGI_KEEP_CONN).
    pub const fn close_connection(&self) -> bool {
        self.close_connection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payload_is_one_padded_record() {
        let mut output = Output::new(1);
        let frames: heapless::Vec<Frame<'_>, 4> = output.stdout(b"Status: 200 OK\r\n").collect();
        assert_eq!(frames.len(), 1);
        let frame = frames[0];
        assert_eq!(
            frame.header(),
            &[0x01, 0x06, 0x00, 0x01, 0x00, 0x10, 0x00, 0x00],
            "16 bytes need no padding"
        );
        let frames: heapless::Vec<Frame<'_>, 4> = output.stdout(b"hello").collect();
        assert_eq!(
            frames[0].header(),
            &[0x01, 0x06, 0x00, 0x01, 0x00, 0x05, 0x03, 0x00]
        );
        assert_eq!(frames[0].padding(), &[0, 0, 0]);
        assert_eq!(frames[0].len(), 16);
        let mut buf = [0xffu8; 16];
        assert_eq!(frames[0].encode(&mut buf), Ok(16));
        assert_eq!(&buf, b"\x01\x06\x00\x01\x00\x05\x03\x00hello\x00\x00\x00");
        assert_eq!(
            frames[0].encode(&mut buf[..15]),
            Err(EncodeError::BufferTooSmall { required: 16 })
        );
    }

    #[test]
    fn empty_payload_gives_no_record() {
        let mut output = Output::new(1);
        assert_eq!(output.stdout(b"").count(), 0);
        assert!(!output.stdout_used());
        assert_eq!(output.stderr(b"").len(), 0);
    }

    #[test]
    fn large_payload_splits_at_65535() {
        static PAYLOAD: [u8; 2 * MAX_CONTENT_LEN + 10] = [b'x'; 2 * MAX_CONTENT_LEN + 10];
        let mut output = Output::new(7);
        let frames = output.stdout(&PAYLOAD);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames.wire_len(), 2 * (8 + 65535 + 1) + (8 + 10 + 6));
        let lengths: heapless::Vec<(usize, usize), 4> = frames
            .map(|f| (f.payload().len(), f.padding().len()))
            .collect();
        assert_eq!(lengths, [(65535, 1), (65535, 1), (10, 6)]);
    }

    #[test]
    fn ending_without_stderr() {
        let end = Output::new(1).end(0, ProtocolStatus::RequestComplete, false);
        assert_eq!(
            end.as_bytes(),
            &[
                0x01, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // empty STDOUT
                0x01, 0x03, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, // END_REQUEST
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // status 0, complete
            ]
        );
        assert!(!end.close_connection());
    }

    #[test]
    fn ending_after_stderr_ends_both_streams() {
        // Spec appendix B, example 3.
        let mut output = Output::new(1);
        assert_eq!(output.stderr(b"config error: missing SI_UID\n").count(), 1);
        let end = output.end(938, ProtocolStatus::RequestComplete, true);
        assert_eq!(
            end.as_bytes(),
            &[
                0x01, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // empty STDOUT
                0x01, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // empty STDERR
                0x01, 0x03, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, // END_REQUEST
                0x00, 0x00, 0x03, 0xaa, 0x00, 0x00, 0x00, 0x00, // 938, complete
            ]
        );
        assert!(end.close_connection());
    }

    #[test]
    fn refusal_before_output_is_end_request_alone() {
        let end = Output::new(2).end(0, ProtocolStatus::Overloaded, false);
        assert_eq!(
            end.as_bytes(),
            &[
                0x01, 0x03, 0x00, 0x02, 0x00, 0x08, 0x00, 0x00, // END_REQUEST
                0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // FCGI_OVERLOADED
            ]
        );
    }
}
