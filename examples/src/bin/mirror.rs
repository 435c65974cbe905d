//! Streams the request body back as `application/octet-stream`, of any size:
//! each piece is written as soon as it is read.

use std::io::{Read, Write};
use std::process::ExitCode;

use simple_fastcgi_std::Request;

fn main() -> ExitCode {
    simple_fastcgi_examples::serve(|req: &mut Request<'_>| {
        req.send_response(200, "application/octet-stream", "", &[], false)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = req.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            req.write_all(&buf[..n])?;
        }
    })
}
