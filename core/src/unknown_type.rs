//! FCGI_UNKNOWN_TYPE's body (spec 4.2).
//!
//! ```text
//! typedef struct {
//!     unsigned char type;
//!     unsigned char reserved[7];
//! } FCGI_UnknownTypeBody;
//! ```

use nom::IResult;
use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::be_u8;

use crate::header::{HEADER_LEN, Header, NULL_REQUEST_ID, RecordType};

/// The body of an FCGI_UNKNOWN_TYPE record: the management record type the
/// application did not understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownTypeBody {
    /// The type that was not understood.
    pub record_type: RecordType,
}

impl UnknownTypeBody {
    /// The body's length on the wire.
    pub const LEN: usize = Self::CONTENT_LENGTH as usize;
    /// The body's length as a header's `contentLength`.
    pub const CONTENT_LENGTH: u16 = 8;

    /// Parses the 8-byte body (streaming).
    pub fn parse(input: &[u8]) -> IResult<&[u8], UnknownTypeBody> {
        let (input, record_type) = be_u8(input)?;
        let (input, _reserved) = take(7usize).parse(input)?;
        Ok((
            input,
            UnknownTypeBody {
                record_type: RecordType::from(record_type),
            },
        ))
    }

    /// The body's eight bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        [u8::from(self.record_type), 0, 0, 0, 0, 0, 0, 0]
    }

    /// The whole `{FCGI_UNKNOWN_TYPE, 0, {type}}` record.
    pub fn record(&self) -> [u8; HEADER_LEN + Self::LEN] {
        let mut out = [0u8; HEADER_LEN + Self::LEN];
        let header = Header::new(
            RecordType::UnknownType,
            NULL_REQUEST_ID,
            Self::CONTENT_LENGTH,
        );
        out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        out[HEADER_LEN..].copy_from_slice(&self.to_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_type_record_bytes() {
        let record = UnknownTypeBody {
            record_type: RecordType::Unknown(0x2a),
        }
        .record();
        assert_eq!(
            record,
            [
                0x01, 0x0b, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, // header, null id
                0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // type 42
            ]
        );
        let (_, body) = UnknownTypeBody::parse(&record[HEADER_LEN..]).unwrap();
        assert_eq!(body.record_type, RecordType::Unknown(0x2a));
    }
}
