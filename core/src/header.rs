//! The record header and whole records (spec 3.3, 8).
//!
//! ```text
//! typedef struct {
//!     unsigned char version;
//!     unsigned char type;
//!     unsigned char requestIdB1;
//!     unsigned char requestIdB0;
//!     unsigned char contentLengthB1;
//!     unsigned char contentLengthB0;
//!     unsigned char paddingLength;
//!     unsigned char reserved;
//! } FCGI_Header;
//! ```

use nom::IResult;
use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u16};

use crate::error::EncodeError;

/// `FCGI_HEADER_LEN`: every record starts with an 8-byte header.
pub const HEADER_LEN: usize = 8;

/// `FCGI_VERSION_1`, the only protocol version.
pub const VERSION_1: u8 = 0x01;

/// `FCGI_NULL_REQUEST_ID`: management records use request id 0.
pub const NULL_REQUEST_ID: u16 = 0x0000;

/// The largest content a record can carry (`contentLength` is 16 bits).
pub const MAX_CONTENT_LEN: usize = 0xffff;

/// The largest record on the wire: header, the largest content and the
/// largest padding (`paddingLength` is 8 bits). A buffer this size holds any
/// record whole.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + u8::MAX as usize;

/// `FCGI_LISTENSOCK_FILENO`: the listening socket a web server hands the
/// application (spec 2.2).
pub const LISTENSOCK_FILENO: i32 = 0;

enum_with_unknown! {
    /// The `type` byte of a record header (spec 8).
    pub enum RecordType(u8) {
        /// `FCGI_BEGIN_REQUEST`: starts a request (web server to application).
        BeginRequest = 0x01,
        /// `FCGI_ABORT_REQUEST`: the web server aborts a request.
        AbortRequest = 0x02,
        /// `FCGI_END_REQUEST`: the application ends a request.
        EndRequest = 0x03,
        /// `FCGI_PARAMS`: the name-value pair stream (CGI environment).
        Params = 0x04,
        /// `FCGI_STDIN`: the request body stream.
        Stdin = 0x05,
        /// `FCGI_STDOUT`: the response stream.
        Stdout = 0x06,
        /// `FCGI_STDERR`: the error stream.
        Stderr = 0x07,
        /// `FCGI_DATA`: the Filter role's extra data stream.
        Data = 0x08,
        /// `FCGI_GET_VALUES`: a management query.
        GetValues = 0x09,
        /// `FCGI_GET_VALUES_RESULT`: the answer to a query.
        GetValuesResult = 0x0a,
        /// `FCGI_UNKNOWN_TYPE`: the answer to an unknown management record.
        UnknownType = 0x0b,
    }
}

impl RecordType {
    /// Whether records of this type are stream records, ended by an empty
    /// record of the same type (spec appendix A).
    pub const fn is_stream(self) -> bool {
        matches!(
            self,
            RecordType::Params
                | RecordType::Stdin
                | RecordType::Stdout
                | RecordType::Stderr
                | RecordType::Data
        )
    }
}

/// The fixed 8-byte prefix of every record.
///
/// The reserved byte is ignored when parsing and written as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Protocol version; [`VERSION_1`] on every valid record.
    pub version: u8,
    /// What the record carries.
    pub record_type: RecordType,
    /// The request the record belongs to; [`NULL_REQUEST_ID`] for management
    /// records.
    pub request_id: u16,
    /// Number of content bytes following the header.
    pub content_length: u16,
    /// Number of padding bytes following the content.
    pub padding_length: u8,
}

impl Header {
    /// A version 1 header whose padding rounds the record up to a multiple of
    /// eight bytes, as the spec recommends.
    pub const fn new(record_type: RecordType, request_id: u16, content_length: u16) -> Self {
        Header {
            version: VERSION_1,
            record_type,
            request_id,
            content_length,
            padding_length: padding_for(content_length as usize),
        }
    }

    /// Parses a header from the front of `input` (streaming: fewer than eight
    /// bytes give `Err::Incomplete` with the number still needed).
    pub fn parse(input: &[u8]) -> IResult<&[u8], Header> {
        let (input, version) = be_u8(input)?;
        let (input, record_type) = be_u8(input)?;
        let (input, request_id) = be_u16(input)?;
        let (input, content_length) = be_u16(input)?;
        let (input, padding_length) = be_u8(input)?;
        let (input, _reserved) = be_u8(input)?;
        Ok((
            input,
            Header {
                version,
                record_type: RecordType::from(record_type),
                request_id,
                content_length,
                padding_length,
            },
        ))
    }

    /// The header's eight bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [id1, id0] = self.request_id.to_be_bytes();
        let [len1, len0] = self.content_length.to_be_bytes();
        [
            self.version,
            u8::from(self.record_type),
            id1,
            id0,
            len1,
            len0,
            self.padding_length,
            0,
        ]
    }

    /// Writes the header to the front of `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let out = out
            .get_mut(..HEADER_LEN)
            .ok_or(EncodeError::BufferTooSmall {
                required: HEADER_LEN,
            })?;
        out.copy_from_slice(&self.to_bytes());
        Ok(HEADER_LEN)
    }

    /// The length of the whole record: header, content and padding.
    pub const fn record_len(&self) -> usize {
        HEADER_LEN + self.content_length as usize + self.padding_length as usize
    }
}

/// The padding that rounds `content_length` up to a multiple of eight bytes.
pub const fn padding_for(content_length: usize) -> u8 {
    const PAD: [u8; 8] = [0, 7, 6, 5, 4, 3, 2, 1];
    PAD[content_length % 8]
}

/// Eight zero bytes: padding is taken from here.
pub(crate) static PADDING: [u8; 8] = [0; 8];

/// A whole record: its header and content, padding skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record<'a> {
    /// The record's header.
    pub header: Header,
    /// The record's content (`header.content_length` bytes).
    pub content: &'a [u8],
}

impl<'a> Record<'a> {
    /// Parses one whole record from the front of `input`: the header, then the
    /// content and padding by the lengths it gives (streaming: a partial record
    /// gives `Err::Incomplete` with the number of bytes still needed).
    pub fn parse(input: &'a [u8]) -> IResult<&'a [u8], Record<'a>> {
        let (input, header) = Header::parse(input)?;
        let (input, content) = take(header.content_length).parse(input)?;
        let (input, _padding) = take(header.padding_length).parse(input)?;
        Ok((input, Record { header, content }))
    }

    /// Writes a record of `record_type` for `request_id` carrying `content`
    /// (padded to a multiple of eight) into `out`, returning its length.
    pub fn encode(
        record_type: RecordType,
        request_id: u16,
        content: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let length = u16::try_from(content.len()).map_err(|_| EncodeError::TooLong {
            length: content.len(),
            max: MAX_CONTENT_LEN,
        })?;
        let header = Header::new(record_type, request_id, length);
        let total = header.record_len();
        let out = out
            .get_mut(..total)
            .ok_or(EncodeError::BufferTooSmall { required: total })?;
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&header.to_bytes());
        let (body, padding) = rest.split_at_mut(content.len());
        body.copy_from_slice(content);
        padding.fill(0);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nom::{Err, Needed};

    #[test]
    fn parses_a_stdin_header() {
        let bytes = [
            0x01, // version
            0x05, // FCGI_STDIN
            0x00, 0x01, // request id 1
            0x01, 0x02, // content length 258
            0x06, // padding 6
            0x00, // reserved
        ];
        let (rest, header) = Header::parse(&bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            header,
            Header {
                version: 1,
                record_type: RecordType::Stdin,
                request_id: 1,
                content_length: 258,
                padding_length: 6,
            }
        );
        assert_eq!(header.record_len(), 8 + 258 + 6);
    }

    #[test]
    fn short_header_says_how_much_is_missing() {
        assert_eq!(
            Header::parse(&[0x01, 0x01, 0x00]),
            Err(Err::Incomplete(Needed::new(1)))
        );
        // be_u16 asks for the rest of the 16-bit field, then later fields.
        for len in 0..HEADER_LEN {
            let bytes = [1u8; HEADER_LEN];
            assert!(matches!(
                Header::parse(&bytes[..len]),
                Err(Err::Incomplete(Needed::Size(_)))
            ));
        }
    }

    #[test]
    fn reserved_byte_is_ignored_and_written_as_zero() {
        let bytes = [0x01, 0x06, 0xff, 0xfe, 0x00, 0x00, 0x00, 0xaa];
        let (_, header) = Header::parse(&bytes).unwrap();
        assert_eq!(header.request_id, 0xfffe);
        assert_eq!(
            header.to_bytes(),
            [0x01, 0x06, 0xff, 0xfe, 0x00, 0x00, 0x00, 0x00]
        );
    }

    #[test]
    fn every_record_type_round_trips() {
        for raw in 0..=u8::MAX {
            let record_type = RecordType::from(raw);
            assert_eq!(u8::from(record_type), raw);
            let known = (0x01..=0x0b).contains(&raw);
            assert_eq!(!matches!(record_type, RecordType::Unknown(_)), known);
        }
        assert_eq!(RecordType::from(0x0b), RecordType::UnknownType);
        assert_eq!(RecordType::from(0x0c), RecordType::Unknown(0x0c));
    }

    #[test]
    fn padding_rounds_up_to_eight() {
        assert_eq!(padding_for(0), 0);
        assert_eq!(padding_for(1), 7);
        assert_eq!(padding_for(8), 0);
        assert_eq!(padding_for(13), 3);
        assert_eq!(padding_for(MAX_CONTENT_LEN), 1);
        assert_eq!(Header::new(RecordType::Stdout, 1, 13).padding_length, 3);
    }

    #[test]
    fn record_encode_then_parse() {
        let mut buf = [0xeeu8; 32];
        let n = Record::encode(RecordType::Stdout, 1, b"hello", &mut buf).unwrap();
        assert_eq!(n, 16);
        assert_eq!(
            &buf[..n],
            &[
                0x01, 0x06, 0x00, 0x01, 0x00, 0x05, 0x03, 0x00, // header, padding 3
                b'h', b'e', b'l', b'l', b'o', // content
                0x00, 0x00, 0x00, // padding
            ]
        );
        let (rest, record) = Record::parse(&buf[..n]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(record.header.record_type, RecordType::Stdout);
        assert_eq!(record.content, b"hello");
    }

    #[test]
    fn partial_record_says_how_much_is_missing() {
        let mut buf = [0u8; 32];
        let n = Record::encode(RecordType::Stdin, 1, b"hello", &mut buf).unwrap();
        assert_eq!(
            Record::parse(&buf[..10]),
            Err(Err::Incomplete(Needed::new(3)))
        );
        assert_eq!(
            Record::parse(&buf[..n - 1]),
            Err(Err::Incomplete(Needed::new(1)))
        );
    }

    #[test]
    fn record_encode_reports_required_size() {
        let mut small = [0u8; 10];
        assert_eq!(
            Record::encode(RecordType::Stdout, 1, b"hello", &mut small),
            Err(EncodeError::BufferTooSmall { required: 16 })
        );
        let big = [0u8; MAX_CONTENT_LEN + 1];
        let mut out = [0u8; 16];
        assert_eq!(
            Record::encode(RecordType::Stdout, 1, &big, &mut out),
            Err(EncodeError::TooLong {
                length: MAX_CONTENT_LEN + 1,
                max: MAX_CONTENT_LEN
            })
        );
        assert_eq!(
            Header::new(RecordType::Stdout, 1, 0).encode(&mut out[..7]),
            Err(EncodeError::BufferTooSmall { required: 8 })
        );
    }
}
