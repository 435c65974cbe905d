//! Every limit and timeout of the async server, with its default.

use std::io;
use std::time::Duration;

use simple_fastcgi_core::{FCGI_WEB_SERVER_ADDRS, WebServerAddrs};

/// The most requests one connection can carry at once (the capacity of the
/// core's request table); [`Settings::max_reqs_per_conn`] may be lower.
pub const MAX_REQS_PER_CONN: usize = 64;

/// The environment variable that turns [`Settings::socket_ring`] on (`1`)
/// in [`Settings::from_env`].
pub const SOCKET_RING_ENV: &str = "SFCGI_SOCKET_RING";

/// The async server's limits and timeouts. Every field has a documented
/// default ([`Settings::default`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Executors (threads, one io_uring each), each pinned to one of the
    /// CPUs this process may run on. Default: one per available CPU.
    pub executors: usize,
    /// How long an executor with nothing to do spins before it sleeps
    /// (glommio's `spin_before_park`). Spinning answers the next request a
    /// little sooner, and saves glommio's allocations for a sleep (about 4
    /// instead of 7 per request with one client at a time), at the cost of
    /// CPU time while idle, which a web server on the same CPU would
    /// rather have. Default: 0.
    pub spin_before_park: Duration,
    /// Put the connections' socket reads and writes on an io_uring of each
    /// executor's own, instead of a `recv` and a `send` per request straight
    /// on the socket: each connection keeps a multishot `recv` armed, and
    /// a turn's `send`s go out with one `io_uring_enter` (writes of more
    /// than 16 KiB still go straight to the socket, and a read finding the
    /// ring's receive buffers all taken, [`Settings::socket_ring_buffers`],
    /// goes through glommio). Busy executors then make a fraction of a
    /// syscall per request (about 0.25 with 8 kept connections, 0.03 with
    /// 64, against 2), using about 15% more CPU per request than without
    /// the ring with 8 connections and 5-10% more with 64
    /// (`benches/syscalls.sh`, 2026-12-07), about 1 MiB more memory, and a few
    /// more allocations each time an executor sleeps. Needs Linux 6.0 (the
    /// ring is made with `COOP_TASKRUN` and `SINGLE_ISSUER`, with provided
    /// buffers and multishot `recv`s): where the kernel cannot make it,
    /// the executor says so on stderr and reads and writes as without it.
    /// Default: false (it costs more CPU than it saves, and more memory);
    /// [`Settings::from_env`] turns it on when `SFCGI_SOCKET_RING` is `1`.
    pub socket_ring: bool,
    /// With `socket_ring`, the receive buffers of 16 KiB each executor's
    /// ring lends the kernel for its connections' `recv`s: a connection
    /// holds one from the moment its bytes come until its reader has taken
    /// them all (a connection whose requests do not read stops taking
    /// more, after what its bytes filled until then), so this bounds the
    /// ring's receive memory per executor.
    /// When all are taken, reads go through glommio until one comes back.
    /// Rounded down to a power of two (the kernel's rule), at least 1 and
    /// at most 32768. Default: 64 (1 MiB per executor).
    pub socket_ring_buffers: u16,
    /// The most open transport connections, over all executors (reported as
    /// FCGI_MAX_CONNS). A connection accepted beyond this is closed at once.
    /// Default: 1024.
    pub max_conns: usize,
    /// Accept concurrent requests on one connection (FCGI_MPXS_CONNS=1),
    /// each running as its own task. Default: true.
    pub multiplex: bool,
    /// With `multiplex`, the most concurrent requests on one connection;
    /// further ones get FCGI_OVERLOADED. At most [`MAX_REQS_PER_CONN`].
    /// Default: 16.
    pub max_reqs_per_conn: usize,
    /// Read buffers of 64 KiB one connection may hold with request bodies
    /// its handlers have not read yet. When they are full the connection
    /// stops reading from the web server until a handler reads: one slow
    /// request cannot make the connection's memory grow. Default: 4.
    pub max_buffers_per_conn: usize,
    /// Memory an executor keeps after use for the next connections and
    /// requests, in each kind: this many read buffers (64 KiB), params
    /// arenas (64 KiB) and response buffers. Beyond it, memory is freed,
    /// and what sat unused for five seconds is freed too, so a burst of
    /// connections does not leave the process big. Default: 16.
    pub spare_buffers: usize,
    /// How long a request may wait for the web server's next bytes (params,
    /// body) before the connection is closed and its reads fail. Default:
    /// 30 s.
    pub read_timeout: Duration,
    /// How long a write may wait on a web server that does not read.
    /// Default: 30 s.
    pub write_timeout: Duration,
    /// How long a kept connection may stay idle between requests. Default:
    /// 75 s (longer than nginx's 60 s upstream keepalive).
    pub idle_timeout: Duration,
    /// When closing while the web server may still be sending a body, how
    /// long to read and drop it so the close is not a reset (nginx answers
    /// 502 to those). Default: 5 s.
    pub lingering_close: Duration,
    /// Requests served on one connection before it is closed after the last
    /// one's END_REQUEST; `None` for no limit. Default: `None`.
    pub max_requests_per_conn: Option<u64>,
    /// After SIGTERM, SIGINT, SIGUSR1 or a shutdown request, how long
    /// in-flight requests may take before the executors stop anyway. The
    /// connections still open then are shut down, so their web servers
    /// see them end, and their handlers, whose reads and writes then fail,
    /// get a further 250 ms to return. Default: 30 s.
    pub shutdown_timeout: Duration,
    /// Install handlers for SIGTERM, SIGINT and SIGUSR1 that shut the server
    /// down gracefully while it runs. Default: true.
    pub handle_signals: bool,
    /// The web servers allowed to connect over TCP (FCGI_WEB_SERVER_ADDRS);
    /// `None` allows any. Default: from the environment
    /// ([`Settings::from_env`]).
    pub web_server_addrs: Option<WebServerAddrs>,
}

impl Settings {
    /// The defaults, with `web_server_addrs` from the environment
    /// (`FCGI_WEB_SERVER_ADDRS`) and `socket_ring` on when
    /// `SFCGI_SOCKET_RING` is `1`. Fails if `FCGI_WEB_SERVER_ADDRS` is set
    /// but not a valid list, or `SFCGI_SOCKET_RING` is set to something
    /// other than `0` or `1`.
    pub fn from_env() -> io::Result<Settings> {
        let web_server_addrs = match std::env::var(FCGI_WEB_SERVER_ADDRS) {
            Ok(list) => Some(
                WebServerAddrs::parse(&list)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{FCGI_WEB_SERVER_ADDRS} is not UTF-8"),
                ));
            }
        };
        let socket_ring = match std::env::var_os(SOCKET_RING_ENV) {
            None => false,
            Some(value) if value == "0" => false,
            Some(value) if value == "1" => true,
            Some(value) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{SOCKET_RING_ENV} is {value:?}, not 0 or 1"),
                ));
            }
        };
        Ok(Settings {
            web_server_addrs,
            socket_ring,
            ..Settings::default()
        })
    }
}

impl Default for Settings {
    /// The documented defaults; `web_server_addrs` is `None` here.
    fn default() -> Self {
        Settings {
            executors: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spin_before_park: Duration::ZERO,
            socket_ring: false,
            socket_ring_buffers: 64,
            max_conns: 1024,
            multiplex: true,
            max_reqs_per_conn: 16,
            max_buffers_per_conn: 4,
            spare_buffers: 16,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            lingering_close: Duration::from_secs(5),
            max_requests_per_conn: None,
            shutdown_timeout: Duration::from_secs(30),
            handle_signals: true,
            web_server_addrs: None,
        }
    }
}
