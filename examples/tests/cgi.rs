//! Every example runs once as a plain CGI program when fd 0 is not a socket
//! (RFC 3875): the request from the environment and stdin, the response on
//! stdout.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(bin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn echo_prints_the_environment_as_json() {
    let out = run(
        env!("CARGO_BIN_EXE_echo"),
        &[("REQUEST_METHOD", "GET"), ("QUERY_STRING", "a=1")],
        b"",
    );
    assert!(out.status.success());
    let text = text(&out);
    let (head, body) = text.split_once("\r\n\r\n").expect("a CGI head");
    assert_eq!(head, "Status: 200 OK\r\nContent-Type: application/json");
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(json["QUERY_STRING"], "a=1");
    assert_eq!(json["REQUEST_METHOD"], "GET");
}

#[test]
fn hello_says_hello() {
    let out = run(
        env!("CARGO_BIN_EXE_hello"),
        &[("REQUEST_METHOD", "GET")],
        b"",
    );
    assert_eq!(
        text(&out),
        "Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!"
    );
}

#[test]
fn mirror_reads_content_length_bytes() {
    let out = run(
        env!("CARGO_BIN_EXE_mirror"),
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "5")],
        b"hello, and more that is not the body",
    );
    assert_eq!(
        text(&out),
        "Status: 200 OK\r\nContent-Type: application/octet-stream\r\n\r\nhello"
    );
}

#[test]
fn dir_listing_lists_and_refuses_escapes() {
    let root = std::env::temp_dir().join(format!("sfcgi-cgi-listing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("sub/inner")).unwrap();
    std::fs::write(root.join("sub/file.txt"), b"12345").unwrap();
    let root_str = root.to_str().unwrap();
    let listing = |query: &str| {
        let out = run(
            env!("CARGO_BIN_EXE_dir-listing-sync"),
            &[("DOCUMENT_ROOT", root_str), ("QUERY_STRING", query)],
            b"",
        );
        text(&out)
    };
    let ok = listing("path=/sub");
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    assert_eq!(head, "Status: 200 OK\r\nContent-Type: application/x-ndjson");
    let mut lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.sort_by_key(|v| v["name"].as_str().unwrap().to_string());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "file.txt");
    assert_eq!(lines[0]["type"], "file");
    assert_eq!(lines[0]["size"], 5);
    assert!(lines[0]["mtime"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(lines[1]["name"], "inner");
    assert_eq!(lines[1]["type"], "dir");
    for escape in [
        "path=..",
        "path=/sub/../..",
        "path=%2e%2e",
        "path=/nonexistent",
        // Absolute paths are taken inside the root: /etc is ROOT/etc.
        "path=/etc",
        "path=%2Fetc%2F..%2F..",
    ] {
        assert!(
            listing(escape).starts_with("Status: 404 Not Found\r\n"),
            "{escape}"
        );
    }
    std::os::unix::fs::symlink("/", root.join("sub/outside")).unwrap();
    assert!(listing("path=/sub/outside").starts_with("Status: 404 Not Found\r\n"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn authorizer_allows_the_token_holder() {
    let allowed = run(
        env!("CARGO_BIN_EXE_authorizer"),
        &[("HTTP_AUTHORIZATION", "Bearer let-me-in")],
        b"",
    );
    assert_eq!(
        text(&allowed),
        "Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nVariable-AUTH_USER: token-holder\r\n\r\n"
    );
    let denied = run(env!("CARGO_BIN_EXE_authorizer"), &[], b"");
    assert!(text(&denied).starts_with("Status: 401 Unauthorized\r\n"));
    assert!(text(&denied).contains("WWW-Authenticate: Bearer\r\n"));
}

#[test]
fn redirect_sends_302_with_location() {
    let out = run(
        env!("CARGO_BIN_EXE_redirect"),
        &[("QUERY_STRING", "to=%2Fnew%3Fa%3D1")],
        b"",
    );
    assert_eq!(
        text(&out),
        "Status: 302 Found\r\nLocation: /new?a=1\r\n\r\n"
    );
    let bad = run(
        env!("CARGO_BIN_EXE_redirect"),
        &[("QUERY_STRING", "to=%0d%0aSet-Cookie:%20x")],
        b"",
    );
    assert!(
        text(&bad).starts_with("Status: 400 Bad Request\r\n"),
        "{}",
        text(&bad)
    );
}
