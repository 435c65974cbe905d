//! FCGI_BEGIN_REQUEST's body (spec 5.1).
//!
//! ```text
//! typedef struct {
//!     unsigned char roleB1;
//!     unsigned char roleB0;
//!     unsigned char flags;
//!     unsigned char reserved[5];
//! } FCGI_BeginRequestBody;
//! ```

use nom::IResult;
use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u16};

use crate::error::EncodeError;
use crate::header::{HEADER_LEN, Header, RecordType};

/// `FCGI_KEEP_CONN`: the flag bit asking the application to keep the
/// connection open after the request.
pub const KEEP_CONN: u8 = 0x01;

enum_with_unknown! {
    /// The role the web server asks the application to play (spec 6).
    pub enum Role(u16) {
        /// `FCGI_RESPONDER`: a CGI/1.1 program (spec 6.2).
        Responder = 0x0001,
        /// `FCGI_AUTHORIZER`: an access decision (spec 6.3).
        Authorizer = 0x0002,
        /// `FCGI_FILTER`: a Responder with an extra data stream (spec 6.4).
        Filter = 0x0003,
    }
}

impl Role {
    /// Whether a request in this role has a body to read on FCGI_STDIN.
    ///
    /// An Authorizer gets the request's params only (spec 6.3): Apache's
    /// mod_authnz_fcgi sends no STDIN record at all, and lighttpd sends an
    /// empty one for requests without a body and none otherwise. A runtime
    /// starts an Authorizer as soon as its params are complete and gives its
    /// handler an empty body, instead of waiting for a stream that may
    /// never come. (A STDIN record that does come is still accepted.)
    pub const fn has_stdin(self) -> bool {
        !matches!(self, Role::Authorizer)
    }
}

/// The body of an FCGI_BEGIN_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BeginRequestBody {
    /// The role asked for.
    pub role: Role,
    /// The flags byte; only [`KEEP_CONN`] is defined.
    pub flags: u8,
}

impl BeginRequestBody {
    /// The body's length on the wire.
    pub const LEN: usize = Self::CONTENT_LENGTH as usize;
    /// The body's length as a header's `contentLength`.
    pub const CONTENT_LENGTH: u16 = 8;

    /// A body for `role`, with [`KEEP_CONN`] set when `keep_conn`.
    pub const fn new(role: Role, keep_conn: bool) -> Self {
        BeginRequestBody {
            role,
            flags: if keep_conn { KEEP_CONN } else { 0 },
        }
    }

    /// Whether the web server keeps the connection open after this request.
    pub const fn keep_conn(&self) -> bool {
        self.flags & KEEP_CONN != 0
    }

    /// Parses the 8-byte body (streaming).
    pub fn parse(input: &[u8]) -> IResult<&[u8], BeginRequestBody> {
        let (input, role) = be_u16(input)?;
        let (input, flags) = be_u8(input)?;
        let (input, _reserved) = take(5usize).parse(input)?;
        Ok((
            input,
            BeginRequestBody {
                role: Role::from(role),
                flags,
            },
        ))
    }

    /// The body's eight bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let [role1, role0] = u16::from(self.role).to_be_bytes();
        [role1, role0, self.flags, 0, 0, 0, 0, 0]
    }

    /// The whole FCGI_BEGIN_REQUEST record for `request_id`.
    pub fn record(&self, request_id: u16) -> [u8; HEADER_LEN + Self::LEN] {
        let mut out = [0u8; HEADER_LEN + Self::LEN];
        let header = Header::new(RecordType::BeginRequest, request_id, Self::CONTENT_LENGTH);
        out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        out[HEADER_LEN..].copy_from_slice(&self.to_bytes());
        out
    }

    /// Writes the whole record for `request_id` into `out`, returning its length.
    pub fn encode(&self, request_id: u16, out: &mut [u8]) -> Result<usize, EncodeError> {
        let record = self.record(request_id);
        let out = out
            .get_mut(..record.len())
            .ok_or(EncodeError::BufferTooSmall {
                required: record.len(),
            })?;
        out.copy_from_slice(&record);
        Ok(record.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nom::{Err, Needed};

    #[test]
    fn parses_responder_with_keep_conn() {
        let body = [
            0x00, 0x01, // FCGI_RESPONDER
            0x01, // FCGI_KEEP_CONN
            0x00, 0x00, 0x00, 0x00, 0x00, // reserved
        ];
        let (rest, parsed) = BeginRequestBody::parse(&body).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.role, Role::Responder);
        assert!(parsed.keep_conn());
        assert_eq!(parsed.to_bytes(), body);
    }

    #[test]
    fn unknown_role_and_flags_are_kept() {
        let body = [0x12, 0x34, 0xfe, 1, 2, 3, 4, 5];
        let (_, parsed) = BeginRequestBody::parse(&body).unwrap();
        assert_eq!(parsed.role, Role::Unknown(0x1234));
        assert!(!parsed.keep_conn());
        assert_eq!(parsed.flags, 0xfe);
    }

    #[test]
    fn short_body_is_incomplete() {
        assert_eq!(
            BeginRequestBody::parse(&[0x00, 0x01, 0x00, 0x00]),
            Err(Err::Incomplete(Needed::new(4)))
        );
    }

    #[test]
    fn whole_record_bytes() {
        let record = BeginRequestBody::new(Role::Filter, false).record(0x0102);
        assert_eq!(
            record,
            [
                0x01, 0x01, 0x01, 0x02, 0x00, 0x08, 0x00, 0x00, // header
                0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Filter, no flags
            ]
        );
        let mut small = [0u8; 15];
        assert_eq!(
            BeginRequestBody::new(Role::Filter, false).encode(1, &mut small),
            Err(EncodeError::BufferTooSmall { required: 16 })
        );
    }
}
