//! Test support for simple-fastcgi: build what a web server sends, record by
//! record, so a test reads like the conversation it checks.
//!
//! ```
//! use simple_fastcgi_tests::wire::Wire;
//! use simple_fastcgi_core::Role;
//!
//! let bytes = Wire::new()
//!     .begin(1, Role::Responder, true)
//!     .params(1, &[("REQUEST_METHOD", "GET")])
//!     .stdin(1, b"")
//!     .into_bytes();
//! assert_eq!(bytes.len(), 16 + 8 + 24 + 8 + 8);
//! ```

pub mod app;
pub mod client;
pub mod http;
pub mod stream;
pub mod web;
pub mod wire;
