//! Every limit and timeout of the server, with its default.

use std::io;
use std::time::Duration;

use simple_fastcgi_core::{FCGI_WEB_SERVER_ADDRS, WebServerAddrs};

/// The server's limits and timeouts. Every field has a documented default
/// ([`Settings::default`]); change the ones you need:
///
/// ```
/// use std::time::Duration;
/// use simple_fastcgi_std::Settings;
///
/// let settings = Settings {
///     workers: 64,
///     read_timeout: Duration::from_secs(10),
///     ..Settings::default()
/// };
/// # let _ = settings;
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker threads, each running one handler at a time: the most requests
    /// served at once (reported as FCGI_MAX_REQS). Connections with a request
    /// ready beyond that wait in a queue; idle connections hold no worker.
    /// Default: 4 × the available cores, at least 16.
    pub workers: usize,
    /// The most open transport connections (reported as FCGI_MAX_CONNS).
    /// A connection accepted beyond this is closed at once. Default: 1024.
    pub max_conns: usize,
    /// How long a request may wait for the web server's next bytes (params,
    /// body) before it fails with a timeout. Default: 30 s.
    pub read_timeout: Duration,
    /// How long a write may block on a web server that does not read.
    /// Default: 30 s.
    pub write_timeout: Duration,
    /// How long a kept connection may stay idle between requests before it is
    /// closed. Longer than nginx's default upstream `keepalive_timeout` (60 s)
    /// so that the web server, not the application, closes idle connections.
    /// Default: 75 s.
    pub idle_timeout: Duration,
    /// When closing a connection while the web server may still be sending
    /// (a request body the handler did not read), how long to keep reading
    /// and dropping it, so the close is not a reset that makes the web server
    /// discard the response (nginx answers 502 then). Default: 5 s.
    pub lingering_close: Duration,
    /// Requests served on one connection before the server closes it after
    /// the last one's END_REQUEST; `None` for no limit. Default: `None`.
    pub max_requests_per_conn: Option<u64>,
    /// After SIGTERM, SIGINT, SIGUSR1 or [`ServerHandle::shutdown`], how
    /// long in-flight requests may take to finish before `serve_forever`
    /// returns anyway. The connections still open then are shut down, so
    /// their web servers see them end, and their handlers, whose reads and
    /// writes then fail, get a further 250 ms to return. Default: 30 s.
    ///
    /// [`ServerHandle::shutdown`]: crate::ServerHandle::shutdown
    pub shutdown_timeout: Duration,
    /// How often `serve_forever` calls [`Handler::service_actions`] at the
    /// least. Default: 500 ms.
    ///
    /// [`Handler::service_actions`]: crate::Handler::service_actions
    pub service_interval: Duration,
    /// Install handlers for SIGTERM, SIGINT and SIGUSR1 that shut the server
    /// down gracefully while `serve_forever` runs. Default: true.
    pub handle_signals: bool,
    /// The web servers allowed to connect over TCP (the spec's
    /// FCGI_WEB_SERVER_ADDRS); `None` allows any. Default: read from the
    /// `FCGI_WEB_SERVER_ADDRS` environment variable by [`Settings::from_env`].
    pub web_server_addrs: Option<WebServerAddrs>,
}

impl Settings {
    /// The defaults, with `web_server_addrs` from the environment. Fails if
    /// `FCGI_WEB_SERVER_ADDRS` is set but not a valid list: an allow-list that
    /// cannot be read must not turn into "allow everyone".
    pub fn from_env() -> io::Result<Settings> {
        Ok(Settings {
            web_server_addrs: web_server_addrs_from_env()?,
            ..Settings::default()
        })
    }
}

impl Default for Settings {
    /// The documented defaults; `web_server_addrs` is `None` here (see
    /// [`Settings::from_env`]).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Settings {
            workers: (4 * cores).max(16),
            max_conns: 1024,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            lingering_close: Duration::from_secs(5),
            max_requests_per_conn: None,
            shutdown_timeout: Duration::from_secs(30),
            service_interval: Duration::from_millis(500),
            handle_signals: true,
            web_server_addrs: None,
        }
    }
}

/// Reads `FCGI_WEB_SERVER_ADDRS`; `None` when it is not set.
pub(crate) fn web_server_addrs_from_env() -> io::Result<Option<WebServerAddrs>> {
    match std::env::var(FCGI_WEB_SERVER_ADDRS) {
        Ok(list) => WebServerAddrs::parse(&list)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{FCGI_WEB_SERVER_ADDRS} is not UTF-8"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let settings = Settings::default();
        assert!(settings.workers >= 16);
        assert_eq!(settings.max_conns, 1024);
        assert!(settings.idle_timeout > Duration::from_secs(60));
        assert!(settings.web_server_addrs.is_none());
    }
}
