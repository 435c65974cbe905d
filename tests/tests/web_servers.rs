//! The examples of both runtimes behind real web servers, each started by the
//! test with a generated configuration: nginx (apps started by spawn-fcgi,
//! Unix and TCP, fastcgi_keep_conn on and off, and without request or
//! response buffering, with slow clients), lighttpd (to apps started by
//! spawn-fcgi, Unix and TCP, and spawning the apps itself with bin-path, the
//! socket on fd 0), Apache (mod_proxy_fcgi, with and without connection
//! reuse, and mod_fcgid spawning the apps itself), Caddy (its FastCGI
//! transport, Unix and TCP) and H2O (kept connections to apps started by
//! spawn-fcgi, Unix and TCP, and apps it spawns itself). Through each: GET
//! with a query and UTF-8, POST bodies of 0 B, 64 KiB and 16 MiB through
//! `mirror` compared byte for byte, a streamed directory listing, redirects,
//! many concurrent clients. Both runtimes' Authorizer examples behind
//! lighttpd (`"mode" => "authorizer"`) and Apache (mod_authnz_fcgi).

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use simple_fastcgi_tests::client::Addr;
use simple_fastcgi_tests::http::{self, HttpResponse};
use simple_fastcgi_tests::web::{
    H2oApp, Listening, SpawnFcgi, WebServer, listens_on, process_group,
};
use simple_fastcgi_tests::wire::pattern;

mod common;

use common::Runtime;

/// The apps every front end routes to: (URL prefix, example) for `rt`.
fn apps(rt: Runtime) -> Vec<(&'static str, &'static str)> {
    [
        ("/echo/", "echo"),
        ("/mirror/", "mirror"),
        ("/dir/", "dir-listing"),
        ("/redirect/", "redirect"),
        ("/hello/", "hello"),
    ]
    .into_iter()
    .map(|(prefix, name)| (prefix, rt.app(name)))
    .collect()
}

/// Starts every app of `rt` with spawn-fcgi.
fn spawn_apps(rt: Runtime, unix: bool) -> Vec<(&'static str, SpawnFcgi)> {
    apps(rt)
        .into_iter()
        .map(|(prefix, name)| (prefix, SpawnFcgi::start(name, unix, &[])))
        .collect()
}

fn routes<'a>(apps: &'a [(&'static str, SpawnFcgi)]) -> Vec<(&'static str, &'a Addr)> {
    apps.iter()
        .map(|(prefix, app)| (*prefix, app.addr()))
        .collect()
}

fn expect_ok(web: &WebServer, response: std::io::Result<HttpResponse>, what: &str) -> HttpResponse {
    match response {
        Ok(response) => response,
        Err(error) => panic!("{what}: {error}\n{}", web.log_text()),
    }
}

/// Everything a front end must carry correctly.
fn suite(web: &WebServer) {
    let port = web.port();

    // GET with a query string and UTF-8 in a header.
    let response = expect_ok(
        web,
        http::request(
            port,
            "GET",
            "/echo/path?q=caf%C3%A9&n=1",
            &[("X-Name", "caf\u{e9} \u{2603}")],
            b"",
        ),
        "GET echo",
    );
    assert_eq!(response.status, 200, "{}", web.log_text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let environ: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON environ");
    assert_eq!(environ["QUERY_STRING"], "q=caf%C3%A9&n=1");
    assert_eq!(environ["REQUEST_METHOD"], "GET");
    assert_eq!(environ["HTTP_X_NAME"], "caf\u{e9} \u{2603}");

    // Bodies through mirror, byte for byte.
    for size in [0, 64 * 1024, 16 * 1024 * 1024] {
        let body = pattern(size);
        let response = expect_ok(web, http::post(port, "/mirror/", &body), "POST mirror");
        assert_eq!(response.status, 200, "{size} bytes: {}", web.log_text());
        assert_eq!(
            response.body.len(),
            size,
            "{size} bytes: {}",
            web.log_text()
        );
        assert!(
            response.body == body,
            "the {size}-byte body came back different"
        );
    }

    // A streamed directory listing, and a refused escape.
    let root = web.docroot();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), b"abc").unwrap();
    let response = expect_ok(web, http::get(port, "/dir/?path=/"), "GET dir");
    assert_eq!(response.status, 200, "{}", web.log_text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/x-ndjson"))
    );
    let names: BTreeSet<String> = response
        .text()
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("an NDJSON line");
            entry["name"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert!(
        names.contains("a.txt") && names.contains("sub"),
        "{names:?}"
    );
    let response = expect_ok(web, http::get(port, "/dir/?path=../.."), "GET dir escape");
    assert_eq!(response.status, 404);

    // Redirects, local and absolute.
    for (query, location) in [
        ("to=/elsewhere%3Fx%3D1", "/elsewhere?x=1"),
        ("to=https://example.com/y", "https://example.com/y"),
    ] {
        let response = expect_ok(
            web,
            http::get(port, &format!("/redirect/?{query}")),
            "GET redirect",
        );
        assert_eq!(response.status, 302, "{query}: {}", web.log_text());
        let got = response.header("location").unwrap_or_default();
        assert!(got.ends_with(location), "{query}: Location {got}");
    }

    // Many concurrent clients.
    let workers: Vec<_> = (0..16)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..10 {
                    let response = http::get(port, "/hello/").expect("GET hello");
                    assert_eq!(response.status, 200);
                    assert_eq!(response.body, b"Hello, world!");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a client thread");
    }
}

#[test]
fn std_nginx_unix_keep_conn() {
    let apps = spawn_apps(Runtime::Std, true);
    suite(&WebServer::nginx(&routes(&apps), true));
}

#[test]
fn std_nginx_unix_without_keep_conn() {
    let apps = spawn_apps(Runtime::Std, true);
    suite(&WebServer::nginx(&routes(&apps), false));
}

#[test]
fn std_nginx_tcp_keep_conn() {
    let apps = spawn_apps(Runtime::Std, false);
    suite(&WebServer::nginx(&routes(&apps), true));
}

#[test]
fn std_nginx_tcp_without_keep_conn() {
    let apps = spawn_apps(Runtime::Std, false);
    suite(&WebServer::nginx(&routes(&apps), false));
}

#[test]
fn std_nginx_unbuffered_with_slow_clients() {
    unbuffered_suite(Runtime::Std);
}

#[test]
fn std_lighttpd_unix() {
    let apps = spawn_apps(Runtime::Std, true);
    suite(&WebServer::lighttpd_to(&routes(&apps)));
}

#[test]
fn std_lighttpd_tcp() {
    let apps = spawn_apps(Runtime::Std, false);
    suite(&WebServer::lighttpd_to(&routes(&apps)));
}

#[test]
fn std_lighttpd_spawning_apps_on_fd_0() {
    suite(&WebServer::lighttpd(&apps(Runtime::Std), &[]));
}

#[test]
fn std_apache_fcgid_spawning_apps_on_fd_0() {
    fcgid_suite(Runtime::Std);
}

#[test]
fn std_apache_unix_with_reuse() {
    let apps = spawn_apps(Runtime::Std, true);
    suite(&WebServer::apache(&routes(&apps), true));
}

#[test]
fn std_apache_tcp_without_reuse() {
    let apps = spawn_apps(Runtime::Std, false);
    suite(&WebServer::apache(&routes(&apps), false));
}

#[test]
fn glommio_nginx_unix_keep_conn() {
    let apps = spawn_apps(Runtime::Glommio, true);
    suite(&WebServer::nginx(&routes(&apps), true));
}

#[test]
fn glommio_nginx_unix_without_keep_conn() {
    let apps = spawn_apps(Runtime::Glommio, true);
    suite(&WebServer::nginx(&routes(&apps), false));
}

#[test]
fn glommio_nginx_tcp_keep_conn() {
    let apps = spawn_apps(Runtime::Glommio, false);
    suite(&WebServer::nginx(&routes(&apps), true));
}

#[test]
fn glommio_nginx_tcp_without_keep_conn() {
    let apps = spawn_apps(Runtime::Glommio, false);
    suite(&WebServer::nginx(&routes(&apps), false));
}

#[test]
fn glommio_nginx_unbuffered_with_slow_clients() {
    unbuffered_suite(Runtime::Glommio);
}

#[test]
fn glommio_lighttpd_unix() {
    let apps = spawn_apps(Runtime::Glommio, true);
    suite(&WebServer::lighttpd_to(&routes(&apps)));
}

#[test]
fn glommio_lighttpd_tcp() {
    let apps = spawn_apps(Runtime::Glommio, false);
    suite(&WebServer::lighttpd_to(&routes(&apps)));
}

#[test]
fn glommio_lighttpd_spawning_apps_on_fd_0() {
    suite(&WebServer::lighttpd(&apps(Runtime::Glommio), &[]));
}

#[test]
fn glommio_apache_fcgid_spawning_apps_on_fd_0() {
    fcgid_suite(Runtime::Glommio);
}

#[test]
fn glommio_apache_unix_with_reuse() {
    let apps = spawn_apps(Runtime::Glommio, true);
    suite(&WebServer::apache(&routes(&apps), true));
}

#[test]
fn glommio_apache_tcp_without_reuse() {
    let apps = spawn_apps(Runtime::Glommio, false);
    suite(&WebServer::apache(&routes(&apps), false));
}

#[test]
fn std_caddy_unix() {
    let apps = spawn_apps(Runtime::Std, true);
    let web = WebServer::caddy(&routes(&apps));
    suite(&web);
    // Without `split`, Caddy puts the whole path in PATH_INFO (the README
    // tells apps to route on it or on REQUEST_URI).
    let response = expect_ok(&web, http::get(web.port(), "/echo/a/b?x=1"), "GET echo");
    let environ: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON environ");
    assert_eq!(environ["SCRIPT_NAME"], "");
    assert_eq!(environ["PATH_INFO"], "/echo/a/b");
    assert_eq!(environ["REQUEST_URI"], "/echo/a/b?x=1");
    assert_eq!(environ["CONTENT_TYPE"], "");
}

#[test]
fn std_caddy_tcp() {
    let apps = spawn_apps(Runtime::Std, false);
    suite(&WebServer::caddy(&routes(&apps)));
}

#[test]
fn glommio_caddy_unix() {
    let apps = spawn_apps(Runtime::Glommio, true);
    suite(&WebServer::caddy(&routes(&apps)));
}

#[test]
fn glommio_caddy_tcp() {
    let apps = spawn_apps(Runtime::Glommio, false);
    suite(&WebServer::caddy(&routes(&apps)));
}

#[test]
fn std_lighttpd_authorizer() {
    lighttpd_authorizer(Runtime::Std);
}

#[test]
fn glommio_lighttpd_authorizer() {
    lighttpd_authorizer(Runtime::Glommio);
}

/// lighttpd's authorizer mode in front of the document root, spawning the
/// Authorizer of `rt` itself.
fn lighttpd_authorizer(rt: Runtime) {
    let web = WebServer::lighttpd(
        &[("/protected/", rt.app("authorizer"))],
        &[("AUTH_TOKEN", "sesame")],
    );
    authorizer_suite(&web);
}

#[test]
fn std_apache_authorizer() {
    apache_authorizer(Runtime::Std);
}

#[test]
fn glommio_apache_authorizer() {
    apache_authorizer(Runtime::Glommio);
}

/// Apache's mod_authnz_fcgi asking the Authorizer of `rt` (spawn-fcgi, TCP).
fn apache_authorizer(rt: Runtime) {
    let app = SpawnFcgi::start(rt.app("authorizer"), false, &[("AUTH_TOKEN", "sesame")]);
    authorizer_suite(&WebServer::apache_authorizer("/protected/", app.addr()));
}

/// The Authorizer in front of `/protected/`, which it allows with the token
/// `sesame`: a request without it gets the Authorizer's 401 and its
/// header, one with it the file; a request with a body is not held up.
fn authorizer_suite(web: &WebServer) {
    std::fs::create_dir_all(web.docroot().join("protected")).unwrap();
    std::fs::write(web.docroot().join("protected/secret.txt"), b"the secret").unwrap();
    let denied = http::get(web.port(), "/protected/secret.txt").unwrap();
    assert_eq!(denied.status, 401, "{}", web.log_text());
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    let allowed = http::request(
        web.port(),
        "GET",
        "/protected/secret.txt",
        &[("Authorization", "Bearer sesame")],
        b"",
    )
    .unwrap();
    assert_eq!(allowed.status, 200, "{}", web.log_text());
    assert_eq!(allowed.body, b"the secret");
    // A request with a body: lighttpd and Apache send the Authorizer no
    // STDIN at all.
    let posted = http::request(
        web.port(),
        "POST",
        "/protected/secret.txt",
        &[("Authorization", "Bearer sesame")],
        b"some body",
    )
    .unwrap();
    assert!(
        matches!(posted.status, 200 | 405),
        "{}: {}",
        posted.status,
        web.log_text()
    );
}

/// nginx passing bodies on as they arrive (`fastcgi_request_buffering
/// off`) and answers as they come, over kept connections: the suite, then
/// clients that write their bodies slowly. `mirror` gets a body piece by
/// piece; `hello` answers before any of the body has come (nginx then
/// closes that connection rather than keep it), and the requests after
/// it are answered on other connections.
fn unbuffered_suite(rt: Runtime) {
    let apps = spawn_apps(rt, true);
    let web = WebServer::nginx_unbuffered(&routes(&apps));
    suite(&web);
    let pause = Duration::from_millis(20);
    let body = pattern(1024 * 1024);
    let response = expect_ok(
        &web,
        http::post_slowly(web.port(), "/mirror/", &body, 16, pause),
        "slow POST mirror",
    );
    assert_eq!(response.status, 200, "{}", web.log_text());
    assert!(response.body == body, "the slow body came back different");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let port = web.port();
            thread::spawn(move || {
                for _ in 0..3 {
                    let body = pattern(256 * 1024);
                    let response = http::post_slowly(port, "/hello/", &body, 8, pause)
                        .expect("slow POST hello");
                    assert_eq!(response.status, 200);
                    assert_eq!(response.body, b"Hello, world!");
                    let response = http::get(port, "/hello/").expect("GET hello");
                    assert_eq!(response.status, 200);
                    assert_eq!(response.body, b"Hello, world!");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a slow client");
    }
}

#[test]
fn std_h2o_unix() {
    h2o_suite(Runtime::Std, Some(true));
}

#[test]
fn std_h2o_tcp() {
    h2o_suite(Runtime::Std, Some(false));
}

#[test]
fn std_h2o_spawning_apps_on_fd_0() {
    h2o_suite(Runtime::Std, None);
}

#[test]
fn glommio_h2o_unix() {
    h2o_suite(Runtime::Glommio, Some(true));
}

#[test]
fn glommio_h2o_tcp() {
    h2o_suite(Runtime::Glommio, Some(false));
}

#[test]
fn glommio_h2o_spawning_apps_on_fd_0() {
    h2o_suite(Runtime::Glommio, None);
}

/// H2O in front of the apps of `rt`: started by spawn-fcgi on Unix sockets
/// or TCP, or (`unix` is `None`) spawned by H2O itself, which then stops
/// them when it stops: nothing of its process group is left. Like Caddy,
/// H2O sends an empty SCRIPT_NAME with the whole path as PATH_INFO, and
/// the DOCUMENT_ROOT it is given.
fn h2o_suite(rt: Runtime, unix: Option<bool>) {
    let names = apps(rt);
    let spawned;
    let routes: Vec<(&str, H2oApp<'_>)> = match unix {
        None => names
            .iter()
            .map(|(prefix, name)| (*prefix, H2oApp::Spawned(name)))
            .collect(),
        Some(unix) => {
            spawned = spawn_apps(rt, unix);
            spawned
                .iter()
                .map(|(prefix, app)| (*prefix, H2oApp::Running(app.addr())))
                .collect()
        }
    };
    let web = WebServer::h2o(&routes);
    suite(&web);
    let response = expect_ok(&web, http::get(web.port(), "/echo/a/b?x=1"), "GET echo");
    let environ: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON environ");
    assert_eq!(environ["SCRIPT_NAME"], "");
    assert_eq!(environ["PATH_INFO"], "/echo/a/b");
    assert_eq!(environ["REQUEST_URI"], "/echo/a/b?x=1");
    assert_eq!(
        environ["DOCUMENT_ROOT"].as_str(),
        web.docroot().to_str(),
        "{environ}"
    );
    if unix.is_some() {
        return;
    }
    apps_in_group(&web, "h2o", names.len());
    let group = web.pid();
    let stopped = web.stop();
    assert!(!stopped.forced, "H2O did not stop on SIGTERM");
    assert_group_ends(group, "H2O");
}

/// The processes in `web`'s group other than its own (`server`'s) helpers:
/// the apps it spawned, at least `routes` of them.
fn apps_in_group(web: &WebServer, server: &str, routes: usize) -> Vec<(u32, String)> {
    let apps: Vec<(u32, String)> = web
        .group()
        .into_iter()
        .filter(|(_, name)| name != server)
        .collect();
    assert!(
        apps.len() >= routes,
        "fewer apps than routes in {server}'s group: {apps:?}"
    );
    apps
}

/// Waits up to 10 s for process group `group`, a stopped web server's,
/// to be empty; kills what is left and fails if it is not.
fn assert_group_ends(group: u32, server: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_group(group).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left = process_group(group);
    if !left.is_empty() {
        // The group's id is not reused while it has members.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
    }
    assert!(
        left.is_empty(),
        "left of {server}'s group after 10 s: {left:?}"
    );
}

/// Apache's mod_fcgid spawning the apps of `rt` itself (the socket on
/// fd 0, run as `nobody`): the suite passes, and when Apache stops,
/// mod_fcgid sends each app SIGTERM and each drains and exits 0 (its log
/// says so for every one; it would say SIGKILL for an app that stayed),
/// and nothing of Apache's process group is left.
fn fcgid_suite(rt: Runtime) {
    let web = WebServer::apache_fcgid(&apps(rt));
    suite(&web);
    let apps_started = apps_in_group(&web, "apache2", apps(rt).len());
    let group = web.pid();
    let stopped = web.stop();
    assert!(!stopped.forced, "Apache did not stop on SIGTERM");
    let log = stopped.log;
    let clean_exits = log
        .lines()
        .filter(|line| line.contains("terminated by calling exit(), return code: 0"))
        .count();
    assert_eq!(
        clean_exits,
        apps_started.len(),
        "not every app exited 0 on SIGTERM: {apps_started:?}\n{log}"
    );
    assert!(!log.contains("SIGKILL"), "{log}");
    assert_group_ends(group, "Apache");
}

/// A port another process listens on is never mistaken for the app's: a
/// CI run once had a stranger on the port chosen for spawn-fcgi, which then
/// failed to bind, while the test's connection reached the stranger and
/// the web server later found nobody there. Starting on such a port must
/// be an error (`SpawnFcgi::start` then starts the app again on another).
#[test]
fn a_taken_port_is_not_mistaken_for_the_app() {
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    assert_eq!(listens_on(std::process::id(), port), Listening::Process);
    eprintln!("a_taken_port_is_not_mistaken_for_the_app: spawn-fcgi is to fail to bind");
    let taken = SpawnFcgi::launch("hello", Some(port), &[]);
    assert!(taken.is_err(), "the app started on a taken port");
    drop(stranger);
    assert_eq!(listens_on(std::process::id(), port), Listening::Nobody);
    let app = SpawnFcgi::start("hello", false, &[]);
    let Addr::Tcp(addr) = app.addr() else {
        panic!("not on TCP: {:?}", app.addr());
    };
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(listens_on(app.pid(), port), Listening::Process);
    assert_eq!(listens_on(std::process::id(), port), Listening::Other);
}
