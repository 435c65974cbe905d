//! An Authorizer-role app (spec 6.3): allows requests that carry
//! `Authorization: Bearer <token>` with the token in the `AUTH_TOKEN`
//! environment variable (default `let-me-in`), and passes the user name to
//! the web server as the `AUTH_USER` variable. Anything else gets `401`.

use std::process::ExitCode;

use simple_fastcgi_std::Request;

fn main() -> ExitCode {
    let token = std::env::var("AUTH_TOKEN").unwrap_or_else(|_| "let-me-in".to_string());
    let expected = format!("Bearer {token}");
    simple_fastcgi_examples::serve(move |req: &mut Request<'_>| {
        if req.param("HTTP_AUTHORIZATION") == Some(expected.as_str()) {
            req.authorize(&[("AUTH_USER", "token-holder")])
        } else {
            req.send_response(401, "", (), &[("WWW-Authenticate", "Bearer")], false)
        }
    })
}
