#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod cgi;
mod conn;
mod handler;
mod listener;
mod request;
mod response;
mod server;
mod settings;

pub use handler::Handler;
pub use listener::{LISTEN_BACKLOG, Listener};
pub use request::{Data, Request};
pub use response::{Body, Chunks, Json};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use server::serve_one_connection;
pub use server::{Server, ServerHandle};
pub use settings::Settings;

/// The protocol core this runtime drives (params, roles, the response head).
pub use simple_fastcgi_core as core;
pub use simple_fastcgi_core::{Params, Role, WebServerAddrs};
