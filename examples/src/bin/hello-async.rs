//! `Hello, world!` for every request, on the glommio runtime: the app the
//! benchmarks measure.

use std::process::ExitCode;

use simple_fastcgi_glommio::Request;

fn main() -> ExitCode {
    simple_fastcgi_examples::serve_async(|| {
        async |req: &mut Request<'_>| {
            req.send_response(200, "text/plain", "Hello, world!", &[], false)
                .await
        }
    })
}
