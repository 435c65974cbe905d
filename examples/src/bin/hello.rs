//! `Hello, world!` for every request: the app the benchmarks measure.

use std::process::ExitCode;

use simple_fastcgi_std::Request;

fn main() -> ExitCode {
    simple_fastcgi_examples::serve(|req: &mut Request<'_>| {
        req.send_response(200, "text/plain", "Hello, world!", &[], false)
    })
}
