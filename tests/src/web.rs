//! Real web servers in front of the apps, each started by the test with a
//! generated configuration in a temporary directory, on free loopback ports,
//! in the foreground, and stopped on drop.
//!
//! The binaries come from Debian's packages (`.ci/run` installs them:
//! `apt-get install nginx lighttpd apache2 libapache2-mod-fcgid caddy h2o
//! spawn-fcgi`). A test that needs one that is missing fails and says
//! which package to install.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::app::{TempDir, example_bin};
use crate::client::Addr;

/// A running web server.
pub struct WebServer {
    child: Child,
    stopped: bool,
    port: u16,
    dir: TempDir,
    log: PathBuf,
}

/// An app behind H2O ([`WebServer::h2o`]).
pub enum H2oApp<'a> {
    /// An app that runs already, on this address.
    Running(&'a Addr),
    /// An example H2O starts itself.
    Spawned(&'a str),
}

/// An app started by `spawn-fcgi` with its listening socket on fd 0.
pub struct SpawnFcgi {
    child: Child,
    addr: Addr,
    _dir: TempDir,
}

/// A free TCP port on 127.0.0.1 for a server the test starts (spawn-fcgi,
/// nginx, lighttpd, Apache, Caddy, H2O), which binds it itself a moment
/// later.
///
/// Ports from `bind(0)` are no good for that: they come from the kernel's
/// ephemeral range, where every other test's `bind(0)` and outgoing
/// connection takes ports too, so one could take this port before the
/// server binds it (it happened: spawn-fcgi failed to bind, and the test
/// talked to another test's app). These come from below that range
/// (32768 and up on Linux), handed out in turn within the test process
/// from a start that depends on its id, skipping any that cannot be bound
/// now.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + n) % SPAN).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// Where Debian's Apache keeps its modules.
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// How many times a server that failed to start (another process took its
/// port first) is started again on another port before the test fails.
pub const START_ATTEMPTS: usize = 3;

/// Runs `start` on ports from [`free_port`] until it succeeds, at most
/// [`START_ATTEMPTS`] times: a server fails to start (`Err`) when another
/// process took its port between the choice and its bind. Panics with
/// every attempt's error if none succeeds.
fn on_free_ports<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut failures = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        match start(port) {
            Ok(started) => return started,
            Err(why) => {
                eprintln!("{what} on port {port}: {why}; starting it again on another port");
                failures.push_str(&why);
                failures.push('\n');
            }
        }
    }
    panic!("{what} did not start in {START_ATTEMPTS} attempts:\n{failures}");
}

/// Who listens on a TCP port of 127.0.0.1, as far as `/proc` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    /// Nobody.
    Nobody,
    /// The process asked about holds a listening socket on the port.
    Process,
    /// Another process.
    Other,
    /// Someone, but the process's open files cannot be read: it runs as
    /// another user now (Apache gives up root) and this one lacks
    /// CAP_SYS_PTRACE.
    Unknown,
}

/// Who listens on 127.0.0.1:`port`, and whether it is process `pid`:
/// read from `/proc/net/tcp` (every listening socket on the port, as
/// SO_REUSEPORT allows several) and `/proc/<pid>/fd`. Readiness that
/// another process on the same port cannot fake.
pub fn listens_on(pid: u32, port: u16) -> Listening {
    const LISTEN: &str = "0A";
    // /proc prints the address as the in-memory 32-bit word, in hex.
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes([127, 0, 0, 1]));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&LISTEN))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    if sockets.is_empty() {
        return Listening::Nobody;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Listening::Unknown;
    };
    let mut readable = false;
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            readable = true;
            if sockets
                .iter()
                .any(|socket| target.as_os_str() == socket.as_str())
            {
                return Listening::Process;
            }
        }
    }
    if readable {
        Listening::Other
    } else {
        Listening::Unknown
    }
}

/// How long a process that listens where its open files cannot be read
/// must stay alive before it counts as ready: one that failed to bind
/// exits at once.
const UNKNOWN_GRACE: Duration = Duration::from_millis(200);

/// The processes in process group `pgid`, as (pid, command name), from
/// `/proc/<pid>/stat` (readable whoever runs them).
pub fn process_group(pgid: u32) -> Vec<(u32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_string();
            // After the name: state, ppid, pgrp. A zombie is gone already.
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let group: u32 = fields.nth(1)?.parse().ok()?;
            (group == pgid && state != "Z").then_some((pid, comm))
        })
        .collect()
}

/// The path of a system binary, or a panic naming the package to install.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let path = Path::new(dir).join(binary);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{binary} is not installed: these tests need it (apt-get install {package}; .ci/run does)"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Writes a web server's configuration `file` into `dir`, next to the
/// document root it serves (`<dir>/docroot`, made here); returns its path.
fn write_config(dir: &TempDir, file: &str, conf: &str) -> PathBuf {
    let path = dir.path().join(file);
    std::fs::write(&path, conf).unwrap_or_else(|e| panic!("write {file}: {e}"));
    std::fs::create_dir_all(dir.path().join("docroot")).expect("docroot");
    path
}

/// Makes a directory and its parents reachable by the unprivileged workers
/// of a web server running as root (Apache refuses to run them as root).
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777));
}

impl SpawnFcgi {
    /// Starts example `name` through `spawn-fcgi -n` on a Unix socket or a
    /// TCP port, with extra environment variables.
    ///
    /// On TCP, a port another process took after [`free_port`] chose it
    /// makes spawn-fcgi fail to bind; the app is then started again on
    /// another port, up to [`START_ATTEMPTS`] times.
    pub fn start(name: &str, unix: bool, env: &[(&str, &str)]) -> SpawnFcgi {
        if unix {
            return SpawnFcgi::launch(name, None, env)
                .unwrap_or_else(|why| panic!("spawn-fcgi {name}: {why}"));
        }
        on_free_ports(&format!("spawn-fcgi {name}"), |port| {
            SpawnFcgi::launch(name, Some(port), env)
        })
    }

    /// Starts example `name` through `spawn-fcgi -n` once: on TCP port
    /// `port` of 127.0.0.1, or on a Unix socket when `None`. An error if
    /// spawn-fcgi exits before the app listens, as when the port is taken.
    pub fn launch(
        name: &str,
        port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Result<SpawnFcgi, String> {
        let spawn = require("spawn-fcgi", "spawn-fcgi");
        let dir = TempDir::new(&format!("spawn-{name}"));
        open_up(dir.path());
        let mut command = Command::new(spawn);
        command.arg("-n");
        let addr = if let Some(port) = port {
            command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            Addr::Tcp(format!("127.0.0.1:{port}"))
        } else {
            let path = dir.path().join("app.sock");
            command.arg("-s").arg(&path).args(["-M", "0666"]);
            Addr::Unix(path)
        };
        command.arg("--").arg(example_bin(name));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("run spawn-fcgi");
        let mut app = SpawnFcgi {
            child,
            addr,
            _dir: dir,
        };
        app.wait_listening()?;
        Ok(app)
    }

    /// Waits until the app listens. On TCP, a connection that succeeds is
    /// not enough: another process could hold the port (spawn-fcgi then
    /// fails to bind, and the test would talk to a stranger), so the
    /// listening socket must be the app's own.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = match &self.addr {
                Addr::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                Addr::Tcp(addr) => addr
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse().ok())
                    .is_some_and(|port| listens_on(self.child.id(), port) == Listening::Process),
            };
            if up {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("spawn-fcgi exited ({status})"));
            }
            assert!(
                Instant::now() < deadline,
                "spawn-fcgi app did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the app listens.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The app's process id (spawn-fcgi's, which became the app).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnFcgi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebServer {
    /// nginx routing each `(prefix, app)` with `fastcgi_pass`,
    /// `fastcgi_keep_conn` as given (with an upstream `keepalive` pool when
    /// on). Request bodies up to 64 MiB, buffered as nginx does by default.
    pub fn nginx(routes: &[(&str, &Addr)], keep_conn: bool) -> WebServer {
        WebServer::nginx_with(routes, keep_conn, "")
    }

    /// nginx as [`WebServer::nginx`] with kept connections, passing request
    /// bodies on as they arrive and responses as they come
    /// (`fastcgi_request_buffering off`, `fastcgi_buffering off`).
    pub fn nginx_unbuffered(routes: &[(&str, &Addr)]) -> WebServer {
        let unbuffered = "fastcgi_request_buffering off;
            fastcgi_buffering off;
            ";
        WebServer::nginx_with(routes, true, unbuffered)
    }

    fn nginx_with(routes: &[(&str, &Addr)], keep_conn: bool, extra: &str) -> WebServer {
        let nginx = require("nginx", "nginx");
        let dir = TempDir::new("nginx");
        let d = dir.path().display().to_string();
        let keepalive = if keep_conn { "keepalive 8;" } else { "" };
        let keep = if keep_conn { "on" } else { "off" };
        let mut upstreams = String::new();
        let mut locations = String::new();
        for (n, (prefix, app)) in routes.iter().enumerate() {
            let server = match app {
                Addr::Unix(path) => format!("unix:{}", path.display()),
                Addr::Tcp(addr) => addr.clone(),
            };
            let _ = writeln!(
                upstreams,
                "    upstream app{n} {{ server {server}; {keepalive} }}"
            );
            let _ = write!(
                locations,
                "        location ^~ {prefix} {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param DOCUMENT_ROOT {d}/docroot;
            fastcgi_keep_conn {keep};
            {extra}fastcgi_pass app{n};
        }}
"
            );
        }
        WebServer::start("nginx", dir, "error.log", |dir, port| {
            // As root, a single process that stays root can reach any socket.
            let user = if is_root() { "user root root;\n" } else { "" };
            let conf = format!(
                "{user}worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
{upstreams}    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {d}/docroot;
{locations}    }}
}}
"
            );
            let conf_path = write_config(dir, "nginx.conf", &conf);
            let mut command = Command::new(&nginx);
            command
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(dir.path().join("error.log"));
            command
        })
    }

    /// lighttpd spawning each example itself (`bin-path`, the listening
    /// socket on the app's fd 0) for its `(prefix, example)` route, with
    /// `env` for the apps. A route whose prefix ends in `/protected/` uses
    /// its app as an Authorizer in front of the document root instead.
    pub fn lighttpd(routes: &[(&str, &str)], env: &[(&str, &str)]) -> WebServer {
        let dir = TempDir::new("lighttpd");
        let d = dir.path().display().to_string();
        let env_list: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("\"{k}\" => \"{v}\""))
            .collect();
        let mut servers = String::new();
        for (n, (prefix, name)) in routes.iter().enumerate() {
            let mode = if prefix.ends_with("/protected/") {
                format!("\"mode\" => \"authorizer\", \"docroot\" => \"{d}/docroot\",")
            } else {
                String::new()
            };
            let _ = write!(
                servers,
                "    \"{prefix}\" => ((
        \"socket\" => \"{d}/app{n}.sock\",
        \"bin-path\" => \"{app}\",
        \"bin-environment\" => ({env}),
        \"check-local\" => \"disable\",
        \"max-procs\" => 1,
        {mode}
    )),
",
                app = example_bin(name).display(),
                env = env_list.join(", "),
            );
        }
        WebServer::lighttpd_serving(dir, &servers)
    }

    /// lighttpd routing each `(prefix, app)` to an app that runs already
    /// (`socket`, or `host` and `port`).
    pub fn lighttpd_to(routes: &[(&str, &Addr)]) -> WebServer {
        let dir = TempDir::new("lighttpd");
        let mut servers = String::new();
        for (prefix, app) in routes {
            let target = match app {
                Addr::Unix(path) => format!("\"socket\" => \"{}\"", path.display()),
                Addr::Tcp(addr) => {
                    let (host, port) = addr.rsplit_once(':').expect("host:port");
                    format!("\"host\" => \"{host}\", \"port\" => {port}")
                }
            };
            let _ = writeln!(
                servers,
                "    \"{prefix}\" => (( {target}, \"check-local\" => \"disable\" )),"
            );
        }
        WebServer::lighttpd_serving(dir, &servers)
    }

    /// lighttpd with `servers` as its `fastcgi.server` entries.
    fn lighttpd_serving(dir: TempDir, servers: &str) -> WebServer {
        let lighttpd = require("lighttpd", "lighttpd");
        let d = dir.path().display().to_string();
        WebServer::start("lighttpd", dir, "error.log", |dir, port| {
            let conf = format!(
                "server.modules = (\"mod_fastcgi\")
server.document-root = \"{d}/docroot\"
server.bind = \"127.0.0.1\"
server.port = {port}
server.errorlog = \"{d}/error.log\"
server.pid-file = \"{d}/lighttpd.pid\"
server.upload-dirs = (\"{d}\")
server.max-request-size = 65536
fastcgi.server = (
{servers})
"
            );
            let conf_path = write_config(dir, "lighttpd.conf", &conf);
            let mut command = Command::new(&lighttpd);
            command.arg("-D").arg("-f").arg(&conf_path);
            command
        })
    }

    /// Apache 2.4 (event MPM, one process with `-X`) with mod_proxy_fcgi
    /// forwarding each `(prefix, app)`, with connection reuse
    /// (`enablereuse=on`) as given. Apache runs its workers as `nobody`, so
    /// Unix sockets must be world-writable (`SpawnFcgi` makes them so).
    pub fn apache(routes: &[(&str, &Addr)], reuse: bool) -> WebServer {
        let reuse = if reuse { "on" } else { "off" };
        let mut site = String::from("LimitRequestBody 0\n");
        for (n, (prefix, app)) in routes.iter().enumerate() {
            // A distinct worker name per app: same-named workers are shared.
            let target = match app {
                Addr::Unix(path) => format!("unix:{}|fcgi://app{n}/", path.display()),
                Addr::Tcp(addr) => format!("fcgi://{addr}/"),
            };
            let _ = writeln!(
                site,
                "ProxyPass \"{prefix}\" \"{target}\" enablereuse={reuse}"
            );
        }
        let dir = TempDir::new("apache");
        WebServer::apache_serving(dir, &["proxy", "proxy_fcgi"], "warn", &site)
    }

    /// Apache 2.4 (event MPM, one process with `-X`) with mod_authnz_fcgi
    /// asking the Authorizer at `app` (TCP: the module takes no Unix
    /// sockets) about every request under `prefix`, which it serves from
    /// the document root when allowed. The Authorizer gets the
    /// `Authorization` header (`CGIPassAuth On`), and the user it names in
    /// its `Variable-AUTH_USER` becomes the request's user.
    pub fn apache_authorizer(prefix: &str, app: &Addr) -> WebServer {
        let Addr::Tcp(app) = app else {
            panic!("mod_authnz_fcgi reaches its Authorizer over TCP only");
        };
        let site = format!(
            "AuthnzFcgiDefineProvider authnz TokenCheck fcgi://{app}/
<Location \"{prefix}\">
    AuthType None
    CGIPassAuth On
    AuthnzFcgiCheckAuthnProvider TokenCheck Authoritative On RequireBasicAuth Off UserExpr \"%{{reqenv:AUTH_USER}}\"
    Require valid-user
</Location>
"
        );
        let dir = TempDir::new("apache-authz");
        let modules = ["authn_core", "authz_user", "authnz_fcgi"];
        WebServer::apache_serving(dir, &modules, "warn", &site)
    }

    /// Apache 2.4 (event MPM, one process with `-X`) with mod_fcgid
    /// spawning each example itself for its `(prefix, example)` route
    /// (`FcgidWrapper … virtual`): the listening Unix socket on the app's
    /// fd 0, as many processes of an app as the load asks for, run as
    /// `nobody`, and stopped with Apache. The apps stay in Apache's process
    /// group, where [`WebServer::group`] finds them. Logs at `info`, where
    /// mod_fcgid tells how each app ended.
    pub fn apache_fcgid(routes: &[(&str, &str)]) -> WebServer {
        let module = Path::new(APACHE_MODULES).join("mod_fcgid.so");
        assert!(
            module.exists(),
            "mod_fcgid is not installed: these tests need it \
             (apt-get install libapache2-mod-fcgid; .ci/run does)"
        );
        let dir = TempDir::new("apache-fcgid");
        let d = dir.path().display();
        let ipc = dir.path().join("fcgid");
        std::fs::create_dir_all(&ipc).expect("mod_fcgid's directory");
        open_up(&ipc);
        let mut site = format!(
            "FcgidIPCDir {d}/fcgid
FcgidProcessTableFile {d}/run/fcgid_shm
FcgidMaxRequestLen 67108864
"
        );
        for (prefix, name) in routes {
            let _ = write!(
                site,
                "<Location \"{prefix}\">
    SetHandler fcgid-script
    Options +ExecCGI
    FcgidWrapper \"{app}\" virtual
</Location>
",
                app = example_bin(name).display(),
            );
        }
        WebServer::apache_serving(dir, &["fcgid"], "info", &site)
    }

    /// Apache 2.4 (event MPM, one process with `-X`, its workers run as
    /// `nobody`) in `dir`, loading `modules` (by name: `proxy` is
    /// `mod_proxy.so`) besides the MPM and authz_core, logging at
    /// `log_level`, with `site` after the common configuration.
    fn apache_serving(dir: TempDir, modules: &[&str], log_level: &str, site: &str) -> WebServer {
        let apache = require("apache2", "apache2");
        open_up(dir.path());
        for sub in ["docroot", "run"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("apache dirs");
            open_up(&dir.path().join(sub));
        }
        let d = dir.path().display().to_string();
        let loads: String = ["mpm_event", "authz_core"]
            .iter()
            .chain(modules)
            .map(|m| format!("LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"))
            .collect();
        WebServer::start("apache", dir, "error.log", |dir, port| {
            let conf = format!(
                "ServerRoot {d}
ServerName localhost
Listen 127.0.0.1:{port}
DefaultRuntimeDir {d}/run
PidFile {d}/run/apache.pid
ErrorLog {d}/error.log
LogLevel {log_level}
Mutex file:{d}/run default
{loads}User nobody
Group nogroup
DocumentRoot {d}/docroot
{site}"
            );
            let conf_path = write_config(dir, "httpd.conf", &conf);
            let mut command = Command::new(&apache);
            command.arg("-X").arg("-f").arg(&conf_path);
            command
        })
    }

    /// H2O with its FastCGI handler, keeping connections to the apps for
    /// 5 s (`fastcgi.timeout.keepalive`), for each `(prefix, app)`: an app
    /// that runs already (`fastcgi.connect`), or an example H2O starts
    /// itself (`fastcgi.spawn`: the listening socket on the app's fd 0, the
    /// app stopped when H2O stops). The document root is given as
    /// DOCUMENT_ROOT (`fastcgi.document_root`).
    pub fn h2o(routes: &[(&str, H2oApp<'_>)]) -> WebServer {
        let h2o = require("h2o", "h2o");
        let dir = TempDir::new("h2o");
        // H2O running as root serves as `nobody`, and runs the apps it
        // spawns as `nobody` too.
        open_up(dir.path());
        let d = dir.path().display().to_string();
        let mut paths = String::new();
        for (prefix, app) in routes {
            let handler = match app {
                H2oApp::Running(Addr::Unix(path)) => format!(
                    "fastcgi.connect:
          port: {}
          type: unix",
                    path.display()
                ),
                H2oApp::Running(Addr::Tcp(addr)) => {
                    let (host, port) = addr.rsplit_once(':').expect("host:port");
                    format!(
                        "fastcgi.connect:
          host: {host}
          port: {port}
          type: tcp"
                    )
                }
                // A shell command in a single-quoted YAML scalar.
                H2oApp::Spawned(name) => {
                    format!("fastcgi.spawn: 'exec \"{}\"'", example_bin(name).display())
                }
            };
            let _ = write!(
                paths,
                "      \"{prefix}\":
        {handler}
        fastcgi.document_root: {d}/docroot
"
            );
        }
        std::fs::create_dir_all(dir.path().join("docroot")).expect("docroot");
        WebServer::start("h2o", dir, "error.log", |dir, port| {
            let conf = format!(
                "listen:
  host: 127.0.0.1
  port: {port}
error-log: {d}/error.log
access-log: /dev/null
fastcgi.timeout.keepalive: 5000
hosts:
  default:
    paths:
{paths}"
            );
            let conf_path = write_config(dir, "h2o.conf", &conf);
            let mut command = Command::new(&h2o);
            command.arg("-c").arg(&conf_path);
            command
        })
    }

    /// Caddy 2 with its FastCGI transport (`reverse_proxy` with
    /// `transport fastcgi`) forwarding each `(prefix, app)`, the document
    /// root as DOCUMENT_ROOT. No admin endpoint, no HTTPS, its state in the
    /// temporary directory.
    pub fn caddy(routes: &[(&str, &Addr)]) -> WebServer {
        let caddy = require("caddy", "caddy");
        let dir = TempDir::new("caddy");
        let d = dir.path().display().to_string();
        let mut handles = String::new();
        for (prefix, app) in routes {
            let upstream = match app {
                Addr::Unix(path) => format!("unix/{}", path.display()),
                Addr::Tcp(addr) => addr.clone(),
            };
            let _ = write!(
                handles,
                "\thandle {prefix}* {{
\t\treverse_proxy {upstream} {{
\t\t\ttransport fastcgi
\t\t}}
\t}}
"
            );
        }
        WebServer::start("caddy", dir, "error.log", |dir, port| {
            let conf = format!(
                "{{
\tadmin off
\tauto_https off
\tstorage file_system {d}/data
\tlog {{
\t\toutput file {d}/error.log
\t\tlevel INFO
\t}}
}}
http://:{port} {{
\tbind 127.0.0.1
\troot * {d}/docroot
{handles}}}
"
            );
            let conf_path = write_config(dir, "Caddyfile", &conf);
            let mut command = Command::new(&caddy);
            command
                .arg("run")
                .arg("--adapter")
                .arg("caddyfile")
                .arg("--config")
                .arg(&conf_path)
                // Where Caddy keeps its own files: not the user's home.
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .env("XDG_DATA_HOME", dir.path().join("data"));
            command
        })
    }

    /// Starts the web server that `command` makes for a port (writing its
    /// configuration into `dir`), on a port from [`free_port`]. If it exits
    /// before it listens (another process took the port first), it is
    /// started again on another port, up to [`START_ATTEMPTS`] times.
    fn start(
        name: &'static str,
        dir: TempDir,
        log: &str,
        command: impl Fn(&TempDir, u16) -> Command,
    ) -> WebServer {
        let log = dir.path().join(log);
        let (child, port) = on_free_ports(name, |port| {
            // Each attempt's failure carries its own log.
            let _ = std::fs::remove_file(&log);
            let mut command = command(&dir, port);
            // Its stderr, and that of apps it starts before it opens its
            // own log (H2O does), into a file: a pipe nobody reads would
            // block them once full.
            let stderr_path = dir.path().join("stderr.log");
            let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
            // Its own process group: a web server that signals its group on
            // the way out (Apache's prefork MPM does) must not hit the test
            // runner.
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .process_group(0);
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("start {name}: {e}"));
            wait_ready(name, &mut child, port, &log, &stderr_path)?;
            Ok((child, port))
        });
        WebServer {
            child,
            stopped: false,
            port,
            dir,
            log,
        }
    }

    /// The other processes in the web server's process group (it runs in
    /// its own): those it started, as (pid, command name).
    pub fn group(&self) -> Vec<(u32, String)> {
        let pid = self.child.id();
        process_group(pid)
            .into_iter()
            .filter(|(member, _)| *member != pid)
            .collect()
    }

    /// The web server's process id, which is also its process group's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the web server as dropping it does, and tells how it went,
    /// with its error log, which goes with it.
    pub fn stop(mut self) -> Stopped {
        let forced = !self.shut_down();
        Stopped {
            log: self.log_text(),
            forced,
        }
    }

    /// SIGTERM, and after 5 s SIGKILL to the whole process group; once.
    /// Whether it exited on SIGTERM.
    fn shut_down(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        self.stopped = true;
        // SIGTERM first: lighttpd and mod_fcgid stop the apps they spawned
        // on the way out.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&mut self.child);
        false
    }

    /// The HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory the web server's document root lives in
    /// (`<dir>/docroot`).
    pub fn docroot(&self) -> PathBuf {
        self.dir.path().join("docroot")
    }

    /// The web server's error log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until web server `child` listens on `port` itself: a connection
/// that succeeds could reach another process holding the port. Its exit
/// before that is an error carrying its stderr and `log`; if it does not
/// listen within 15 s, it is killed and the test fails.
fn wait_ready(
    name: &str,
    child: &mut Child,
    port: u16,
    log: &Path,
    stderr: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let mut unknown_since = None;
    loop {
        match listens_on(child.id(), port) {
            Listening::Process => return Ok(()),
            // Its files are out of reach: ready if it stays alive.
            Listening::Unknown => {
                let since = *unknown_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNKNOWN_GRACE && matches!(child.try_wait(), Ok(None)) {
                    return Ok(());
                }
            }
            Listening::Nobody | Listening::Other => unknown_since = None,
        }
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(stderr).unwrap_or_default();
            return Err(format!(
                "{name} exited before it listened ({status}): {stderr}\n{}",
                log_text()
            ));
        }
        if Instant::now() >= deadline {
            kill_group(child);
            panic!("{name} did not start listening: {}", log_text());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// How a web server stopped ([`WebServer::stop`]).
pub struct Stopped {
    /// Its error log.
    pub log: String,
    /// Whether it had to be killed: it did not exit within 5 s of SIGTERM.
    pub forced: bool,
}

/// SIGKILL to `child`'s process group (it leads one of its own), so that
/// what it started goes too; then reaps it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}
