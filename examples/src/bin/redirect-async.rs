//! Redirects to the `to` query parameter with `send_redirect`, on the
//! glommio runtime; `400` when it is missing or invalid.

use std::process::ExitCode;

use simple_fastcgi_examples::query_param;
use simple_fastcgi_glommio::Request;

fn main() -> ExitCode {
    simple_fastcgi_examples::serve_async(|| {
        async |req: &mut Request<'_>| {
            let target = req
                .param("QUERY_STRING")
                .and_then(|query| query_param(query, "to"));
            match target {
                Some(target) => match req.send_redirect(&target).await {
                    Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
                        req.send_response(400, "", (), &[], false).await
                    }
                    other => other,
                },
                None => req.send_response(400, "", (), &[], false).await,
            }
        }
    })
}
