#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![warn(missing_docs)]

// Declared first so its macros are visible in every module below.
#[macro_use]
mod fmt;
#[macro_use]
mod macros;

pub mod begin_request;
pub mod connection;
pub mod end_request;
pub mod error;
pub mod header;
pub mod http;
#[cfg(feature = "json")]
pub mod json;
pub mod name_value;
pub mod output;
pub mod params;
pub mod unknown_type;
pub mod web_server_addrs;

/// The parser combinator crate the `parse` functions return results of
/// (`nom::IResult`, `nom::Err::Incomplete`), re-exported so callers match on
/// the same version.
pub use nom;

pub use begin_request::{BeginRequestBody, KEEP_CONN, Role};
pub use connection::{
    Config, Connection, Event, FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, Progress,
};
pub use end_request::{EndRequestBody, ProtocolStatus};
#[cfg(feature = "json")]
pub use error::JsonError;
pub use error::{EncodeError, HttpError, ParamsError, ProtocolError};
pub use header::{
    HEADER_LEN, Header, LISTENSOCK_FILENO, MAX_CONTENT_LEN, MAX_RECORD_LEN, NULL_REQUEST_ID,
    Record, RecordType, VERSION_1,
};
pub use name_value::NameValue;
pub use output::{EndRequest, Frame, Frames, Output};
pub use params::{DEFAULT_PARAMS_BYTES, DEFAULT_PARAMS_PAIRS, Params};
pub use unknown_type::UnknownTypeBody;
pub use web_server_addrs::{FCGI_WEB_SERVER_ADDRS, WebServerAddrs, WebServerAddrsError};
