#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod conn;
mod handler;
mod request;
mod response;
mod ring;
mod server;
mod settings;

pub use handler::Handler;
pub use request::Request;
pub use response::{Body, Chunks, Json};
pub use server::{AsyncServer, ServerHandle, check_environment};
pub use settings::{MAX_REQS_PER_CONN, SOCKET_RING_ENV, Settings};

/// The protocol core this runtime drives (params, roles, the response head).
pub use simple_fastcgi_core as core;
pub use simple_fastcgi_core::{Params, Role, WebServerAddrs};
pub use simple_fastcgi_std::Listener;
