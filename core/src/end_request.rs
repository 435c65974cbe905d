//! FCGI_END_REQUEST's body (spec 5.5).
//!
//! ```text
//! typedef struct {
//!     unsigned char appStatusB3;
//!     unsigned char appStatusB2;
//!     unsigned char appStatusB1;
//!     unsigned char appStatusB0;
//!     unsigned char protocolStatus;
//!     unsigned char reserved[3];
//! } FCGI_EndRequestBody;
//! ```

use nom::IResult;
use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u32};

use crate::header::{HEADER_LEN, Header, RecordType};

enum_with_unknown! {
    /// How a request ended at the protocol level (spec 5.5).
    pub enum ProtocolStatus(u8) {
        /// `FCGI_REQUEST_COMPLETE`: normal end of request.
        RequestComplete = 0x00,
        /// `FCGI_CANT_MPX_CONN`: a concurrent request on a connection that
        /// handles one request at a time was refused.
        CantMpxConn = 0x01,
        /// `FCGI_OVERLOADED`: refused because the application ran out of a
        /// resource.
        Overloaded = 0x02,
        /// `FCGI_UNKNOWN_ROLE`: refused because the role is unknown.
        UnknownRole = 0x03,
    }
}

/// The body of an FCGI_END_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndRequestBody {
    /// The application's status, like a CGI program's exit status.
    pub app_status: u32,
    /// The protocol-level outcome.
    pub protocol_status: ProtocolStatus,
}

impl EndRequestBody {
    /// The body's length on the wire.
    pub const LEN: usize = Self::CONTENT_LENGTH as usize;
    /// The body's length as a header's `contentLength`.
    pub const CONTENT_LENGTH: u16 = 8;

    /// Parses the 8-byte body (streaming).
    pub fn parse(input: &[u8]) -> IResult<&[u8], EndRequestBody> {
        let (input, app_status) = be_u32(input)?;
        let (input, protocol_status) = be_u8(input)?;
        let (input, _reserved) = take(3usize).parse(input)?;
        Ok((
            input,
            EndRequestBody {
                app_status,
                protocol_status: ProtocolStatus::from(protocol_status),
            },
        ))
    }

    /// The body's eight bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let [a3, a2, a1, a0] = self.app_status.to_be_bytes();
        [a3, a2, a1, a0, u8::from(self.protocol_status), 0, 0, 0]
    }

    /// The whole FCGI_END_REQUEST record for `request_id`.
    pub fn record(&self, request_id: u16) -> [u8; HEADER_LEN + Self::LEN] {
        let mut out = [0u8; HEADER_LEN + Self::LEN];
        let header = Header::new(RecordType::EndRequest, request_id, Self::CONTENT_LENGTH);
        out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        out[HEADER_LEN..].copy_from_slice(&self.to_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_3_end_request() {
        // {FCGI_END_REQUEST, 1, {938, FCGI_REQUEST_COMPLETE}} from appendix B.
        let body = EndRequestBody {
            app_status: 938,
            protocol_status: ProtocolStatus::RequestComplete,
        };
        assert_eq!(
            body.record(1),
            [
                0x01, 0x03, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, // header
                0x00, 0x00, 0x03, 0xaa, // appStatus 938
                0x00, // FCGI_REQUEST_COMPLETE
                0x00, 0x00, 0x00, // reserved
            ]
        );
        let bytes = body.to_bytes();
        let (rest, parsed) = EndRequestBody::parse(&bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed, body);
    }

    #[test]
    fn protocol_statuses() {
        assert_eq!(ProtocolStatus::from(1), ProtocolStatus::CantMpxConn);
        assert_eq!(ProtocolStatus::from(2), ProtocolStatus::Overloaded);
        assert_eq!(ProtocolStatus::from(3), ProtocolStatus::UnknownRole);
        assert_eq!(ProtocolStatus::from(9), ProtocolStatus::Unknown(9));
        assert_eq!(u8::from(ProtocolStatus::Unknown(9)), 9);
    }
}
