//! Sends the request body back as `application/octet-stream`, of any size.
//!
//! The body is read whole before the response starts: nginx stops sending a
//! request body once it has passed the response head on to the client, so
//! an app that answers while still reading a large body waits forever. The
//! body is kept in memory up to 1 MiB and in an unlinked temporary file
//! beyond, so its size is not limited by memory.

use std::io::{self, Write};
use std::process::ExitCode;

use simple_fastcgi_examples::Spool;
use simple_fastcgi_std::Request;

fn main() -> ExitCode {
    simple_fastcgi_examples::serve(|req: &mut Request<'_>| {
        let mut body = Spool::new(1024 * 1024);
        io::copy(req, &mut body)?;
        req.send_response(200, "application/octet-stream", "", &[], false)?;
        body.copy_to(req)?;
        req.flush()
    })
}
