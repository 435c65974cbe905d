//! The `authorizer` example on the glommio runtime: an Authorizer-role app
//! (spec 6.3) that allows requests carrying `Authorization: Bearer <token>`
//! with the token in the `AUTH_TOKEN` environment variable (default
//! `let-me-in`), and passes the user name to the web server as the
//! `AUTH_USER` variable. Anything else gets `401`.

use std::process::ExitCode;

use simple_fastcgi_glommio::Request;

fn main() -> ExitCode {
    let token = std::env::var("AUTH_TOKEN").unwrap_or_else(|_| "let-me-in".to_string());
    let expected = format!("Bearer {token}");
    simple_fastcgi_examples::serve_async(move || {
        let expected = expected.clone();
        async move |req: &mut Request<'_>| {
            if req.param("HTTP_AUTHORIZATION") == Some(expected.as_str()) {
                req.authorize(&[("AUTH_USER", "token-holder")]).await
            } else {
                req.send_response(401, "", (), &[("WWW-Authenticate", "Bearer")], false)
                    .await
            }
        }
    })
}
