//! Shared bits of the example apps: how they start, and query strings.
//!
//! Every example serves on fd 0 when started by a web server or
//! `spawn-fcgi`, runs once as a CGI program when fd 0 is not a socket, and
//! listens on an address when given one:
//!
//! ```sh
//! cargo run -p simple-fastcgi-examples --bin hello -- 127.0.0.1:9000
//! REQUEST_METHOD=GET QUERY_STRING=a=1 cargo run -p simple-fastcgi-examples --bin echo
//! ```

use std::process::ExitCode;

use simple_fastcgi_std::{Handler, Server};

/// Serves `handler` on the address given as the first argument, or on fd 0
/// (or as CGI) without one. Returns the process's exit code.
pub fn serve<H: Handler>(handler: H) -> ExitCode {
    let server = match std::env::args().nth(1) {
        Some(addr) if addr == "-h" || addr == "--help" => {
            eprintln!(
                "usage: {} [ADDRESS]  (host:port or a Unix socket path; default: fd 0)",
                program()
            );
            return ExitCode::SUCCESS;
        }
        Some(addr) => Server::bind(&addr, handler),
        None => Server::new(handler),
    };
    let result = server.and_then(|server| {
        if !server.is_cgi() {
            eprintln!(
                "{}: serving FastCGI on {}",
                program(),
                server.handle().local_addr()
            );
        }
        server.serve_forever()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", program());
            ExitCode::FAILURE
        }
    }
}

fn program() -> String {
    std::env::args()
        .next()
        .and_then(|path| path.rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| "example".to_string())
}

/// The first value of `name` in a query string (`a=1&path=%2Fx`), decoded
/// (`+` is a space, `%XX` a byte); `None` if absent or not UTF-8.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key)? == name {
            percent_decode(value)
        } else {
            None
        }
    })
}

/// Decodes `+` and `%XX` escapes; `None` for a bad escape or non-UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("a=1&path=%2Fsub%20dir&b", "path").as_deref(),
            Some("/sub dir")
        );
        assert_eq!(query_param("path=a+b", "path").as_deref(), Some("a b"));
        assert_eq!(query_param("x=1", "path"), None);
        assert_eq!(query_param("path", "path").as_deref(), Some(""));
        assert_eq!(query_param("path=%zz", "path"), None);
        assert_eq!(query_param("path=%e2%82%ac", "path").as_deref(), Some("€"));
    }
}
