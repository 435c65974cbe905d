//! A small HTTP/1.1 client for talking to the web servers in front of the
//! apps: one request per connection (`Connection: close`), bodies by
//! `Content-Length` or chunked.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `headers` and `body` to `127.0.0.1:port`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    send(port, method, path, headers, body, 1, Duration::ZERO)
}

/// `POST path` with `body`, written in `pieces` parts with `pause` before
/// each: a client on a slow network.
pub fn post_slowly(
    port: u16,
    path: &str,
    body: &[u8],
    pieces: usize,
    pause: Duration,
) -> io::Result<HttpResponse> {
    let headers = [("Content-Type", "application/octet-stream")];
    send(port, "POST", path, &headers, body, pieces, pause)
}

fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    pieces: usize,
    pause: Duration,
) -> io::Result<HttpResponse> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    // The body is written from another thread while the response is read:
    // servers may answer before they have read it all.
    let mut writer = stream.try_clone()?;
    let body = body.to_vec();
    let piece = body.len().div_ceil(pieces.max(1)).max(1);
    let sending = std::thread::spawn(move || {
        writer.write_all(head.as_bytes())?;
        for part in body.chunks(piece) {
            std::thread::sleep(pause);
            writer.write_all(part)?;
        }
        Ok::<(), io::Error>(())
    });
    let response = read_response(&mut BufReader::new(stream));
    let sent = sending
        .join()
        .map_err(|_| io::Error::other("writer panicked"))?;
    let response = response?;
    // A server may close early after a complete answer (e.g. an error).
    if let Err(error) = sent {
        if response.status < 400 {
            return Err(error);
        }
    }
    Ok(response)
}

/// `GET path`.
pub fn get(port: u16, path: &str) -> io::Result<HttpResponse> {
    request(port, "GET", path, &[], b"")
}

/// `POST path` with `body`.
pub fn post(port: u16, path: &str, body: &[u8]) -> io::Result<HttpResponse> {
    request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/octet-stream")],
        body,
    )
}

fn read_response(reader: &mut impl BufRead) -> io::Result<HttpResponse> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            reader.read_exact(&mut response.body[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(length) = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        response.body.resize(length, 0);
        reader.read_exact(&mut response.body)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}
