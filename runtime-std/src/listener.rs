//! Listening sockets: fd 0 as the FastCGI spec hands it over, a bound TCP or
//! Unix address, or any listener the caller already has.

use std::fmt;
use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::net::{AddressFamily, SocketType, sockopt};

/// The listen backlog of sockets [`Listener::bind`] creates: connections
/// the kernel completes before the server accepts them. The kernel caps it
/// at `net.core.somaxconn`. std's default of 128 overflows when hundreds of
/// connections arrive at once, and each overflow costs a client a one-second
/// SYN retransmit. (A socket inherited on fd 0 keeps the backlog its
/// creator chose, such as spawn-fcgi's `-b`.)
pub const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket the server accepts FastCGI connections on.
pub struct Listener {
    kind: ListenerKind,
    /// A Unix socket path this process created, removed on drop.
    unlink: Option<PathBuf>,
    /// A duplicate of fd 0 (see [`Listener::fd0`]).
    from_fd0: bool,
    /// Point fd 0 at `/dev/null` on drop ([`Listener::begin_serving`]).
    release_fd0: bool,
}

enum ListenerKind {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// What file descriptor 0 is at startup.
pub(crate) enum Fd0 {
    /// A listening socket: serve FastCGI on it (spec 2.2).
    Listener(Listener),
    /// Anything else: run once as a CGI program (RFC 3875).
    NotASocket,
}

/// One accepted transport connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Binds `addr`: `host:port` (`127.0.0.1:9000`, `[::1]:9000`,
    /// `localhost:9000`) for TCP, or a path (`/run/app.sock`, or
    /// `unix:relative.sock`) for a Unix socket. A stale Unix socket file that
    /// nobody listens on is replaced; the file is removed again on drop.
    pub fn bind(addr: &str) -> io::Result<Listener> {
        if let Some(path) = addr.strip_prefix("unix:") {
            return Listener::bind_unix(Path::new(path));
        }
        if addr.starts_with('/') || addr.starts_with("./") {
            return Listener::bind_unix(Path::new(addr));
        }
        let addrs: Vec<_> = addr.to_socket_addrs()?.collect();
        let listener = TcpListener::bind(&addrs[..])?;
        // listen(2) again on a listening socket only changes its backlog.
        rustix::net::listen(&listener, LISTEN_BACKLOG)?;
        Ok(Listener {
            kind: ListenerKind::Tcp(listener),
            unlink: None,
            from_fd0: false,
            release_fd0: false,
        })
    }

    fn bind_unix(path: &Path) -> io::Result<Listener> {
        let listener = match UnixListener::bind(path) {
            Ok(listener) => listener,
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                let is_socket =
                    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
                let stale = is_socket && UnixStream::connect(path).is_err();
                if !stale {
                    return Err(error);
                }
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(error) => return Err(error),
        };
        rustix::net::listen(&listener, LISTEN_BACKLOG)?;
        Ok(Listener {
            kind: ListenerKind::Unix(listener),
            unlink: Some(path.to_path_buf()),
            from_fd0: false,
            release_fd0: false,
        })
    }

    /// Adopts a listening socket (TCP or Unix stream) from a file descriptor,
    /// such as one passed by a process manager.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        if sockopt::socket_type(&fd)? != SocketType::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stream socket",
            ));
        }
        if !sockopt::socket_acceptconn(&fd)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket is not listening",
            ));
        }
        let kind = match sockopt::socket_domain(&fd)? {
            AddressFamily::UNIX => ListenerKind::Unix(UnixListener::from(fd)),
            AddressFamily::INET | AddressFamily::INET6 => ListenerKind::Tcp(TcpListener::from(fd)),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "listening socket is neither TCP nor Unix",
                ));
            }
        };
        Ok(Listener {
            kind,
            unlink: None,
            from_fd0: false,
            release_fd0: false,
        })
    }

    /// Called by the runtimes when they start serving on this listener:
    /// from then on, dropping it also lets go of fd 0 when it came from
    /// there (fd 0 is pointed at `/dev/null`), so new connections are
    /// refused once the server shuts down. A listener dropped without
    /// serving leaves fd 0 alone, so another server can still be made on it
    /// (the std runtime after the glommio one could not start, say).
    #[doc(hidden)]
    pub fn begin_serving(&mut self) {
        self.release_fd0 = self.from_fd0;
    }

    /// Whether connections arrive over TCP (where FCGI_WEB_SERVER_ADDRS
    /// applies).
    pub fn is_tcp(&self) -> bool {
        matches!(self.kind, ListenerKind::Tcp(_))
    }

    /// The address it listens on, for logs: `127.0.0.1:9000` or
    /// `unix:/run/app.sock`.
    pub fn local_addr(&self) -> String {
        match &self.kind {
            ListenerKind::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp:<{e}>"), |a| a.to_string()),
            ListenerKind::Unix(l) => match l.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(path) => format!("unix:{}", path.display()),
                    None => "unix:<unnamed>".to_string(),
                },
                Err(e) => format!("unix:<{e}>"),
            },
        }
    }

    /// The listening socket on fd 0 (FCGI_LISTENSOCK_FILENO) as the spec
    /// hands it over, or `None` when fd 0 is not a listening socket (the
    /// program was started as CGI, or by hand). The listener is a duplicate
    /// of fd 0; once a server has served on it, dropping it also points fd 0
    /// at `/dev/null`, so that closing the listener at shutdown really ends
    /// this process's hold on the socket.
    pub fn fd0() -> io::Result<Option<Listener>> {
        Ok(match detect_fd0()? {
            Fd0::Listener(listener) => Some(listener),
            Fd0::NotASocket => None,
        })
    }

    /// Sets `O_NONBLOCK` on the socket (shared by every duplicate of it).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match &self.kind {
            ListenerKind::Tcp(l) => l.set_nonblocking(nonblocking),
            ListenerKind::Unix(l) => l.set_nonblocking(nonblocking),
        }
    }

    /// Accepts one connection; the peer's IP for TCP.
    pub(crate) fn accept(&self) -> io::Result<(Stream, Option<IpAddr>)> {
        match &self.kind {
            ListenerKind::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                Ok((Stream::Tcp(stream), Some(peer.ip())))
            }
            ListenerKind::Unix(l) => {
                let (stream, _) = l.accept()?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Listener").field(&self.local_addr()).finish()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            ListenerKind::Tcp(l) => l.as_fd(),
            ListenerKind::Unix(l) => l.as_fd(),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener {
            kind: ListenerKind::Tcp(listener),
            unlink: None,
            from_fd0: false,
            release_fd0: false,
        }
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Self {
        Listener {
            kind: ListenerKind::Unix(listener),
            unlink: None,
            from_fd0: false,
            release_fd0: false,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unlink {
            let _ = std::fs::remove_file(path);
        }
        if self.release_fd0 {
            // Without /dev/null (a bare chroot) fd 0 keeps the socket open:
            // new connections then wait in the backlog until the process
            // exits instead of being refused at once.
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = rustix::stdio::dup2_stdin(&null);
            }
        }
    }
}

/// Looks at fd 0 the way the spec says to: a listening socket means FastCGI.
pub(crate) fn detect_fd0() -> io::Result<Fd0> {
    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let Ok(stat) = rustix::fs::fstat(fd) else {
        // fd 0 is closed: nothing to listen on, nothing to read.
        return Ok(Fd0::NotASocket);
    };
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Ok(Fd0::NotASocket);
    }
    if !sockopt::socket_acceptconn(fd).unwrap_or(false) {
        // A connected socket (inetd style) is a CGI stdin, not a listener.
        return Ok(Fd0::NotASocket);
    }
    let mut listener = Listener::from_fd(fd.try_clone_to_owned()?)?;
    listener.from_fd0 = true;
    Ok(Fd0::Listener(listener))
}

impl Stream {
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    pub(crate) fn set_nodelay(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(true),
            Stream::Unix(_) => Ok(()),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// Reads what is available now without blocking: `Ok(0)` is end of
    /// stream, `WouldBlock` means nothing is there.
    pub(crate) fn read_nonblocking(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::net::recv(self, buf, rustix::net::RecvFlags::DONTWAIT)?.0)
    }

    /// Writes what it can of `slices` without waiting.
    pub(crate) fn write_vectored_nonblocking(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        Ok(rustix::net::sendmsg(
            self,
            slices,
            &mut rustix::net::SendAncillaryBuffer::default(),
            flags,
        )?)
    }

    /// Reads into `buf`'s spare capacity and extends it by what came; waits
    /// at most the read timeout, or not at all without `wait`.
    pub(crate) fn read_into(&self, buf: &mut Vec<u8>, wait: bool) -> io::Result<usize> {
        let flags = if wait {
            rustix::net::RecvFlags::empty()
        } else {
            rustix::net::RecvFlags::DONTWAIT
        };
        Ok(rustix::net::recv(self, spare_capacity(buf), flags)?.0)
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_tcp_and_unix() {
        let tcp = Listener::bind("127.0.0.1:0").unwrap();
        assert!(tcp.is_tcp());
        assert!(tcp.local_addr().starts_with("127.0.0.1:"));

        let dir = std::env::temp_dir().join(format!("sfcgi-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.sock");
        let unix = Listener::bind(path.to_str().unwrap()).unwrap();
        assert!(!unix.is_tcp());
        assert_eq!(unix.local_addr(), format!("unix:{}", path.display()));
        // In use by a live listener: refused.
        assert_eq!(
            Listener::bind(path.to_str().unwrap()).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        drop(unix);
        assert!(!path.exists(), "removed on drop");

        // A stale socket file (nobody listening) is replaced.
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let again = Listener::bind(&format!("unix:{}", path.display())).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_fd_checks_the_socket() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = Listener::from_fd(OwnedFd::from(tcp)).unwrap();
        assert!(listener.is_tcp());

        let connected = TcpStream::connect(listener.local_addr()).unwrap();
        let error = Listener::from_fd(OwnedFd::from(connected)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(Listener::from_fd(OwnedFd::from(file)).is_err());
    }
}
