//! The server: worker threads that share one epoll, and the thread in
//! `serve_forever`, which keeps time.
//!
//! Every open connection is registered with the epoll (edge-triggered) from
//! accept to close, and is either with a worker (bytes are flowing or a
//! handler runs) or parked in the table (it waits for the web server). Idle
//! workers wait in `epoll_wait`; the event of a parked connection hands it
//! to one of them. A worker that has answered a request and read everything
//! there was parks the connection and takes the next ready one itself: a
//! busy server moves from connection to connection without switching
//! threads, and a request costs a read, a write and an `epoll_wait` that
//! returns at once while connections are ready. Idle and slow connections
//! cost no thread. The timekeeper
//! runs service actions, closes connections whose deadline passed, pauses
//! accepting when out of descriptors, and steers the shutdown.

use std::any::Any;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use simple_fastcgi_core::{Config, Params};

use crate::cgi::{self, CgiIo};
use crate::conn::{Begun, Buffers, Fill, Io, Ready};
use crate::handler::Handler;
use crate::listener::{self, Fd0, Listener, Stream};
use crate::request::{Backend, Request};
use crate::settings::Settings;

/// A FastCGI server: the Rust form of the seed's `FcgiServer` and
/// `FcgiThreadingServer`.
///
/// ```no_run
/// use simple_fastcgi_std::{Request, Server};
///
/// fn main() -> std::io::Result<()> {
///     // On fd 0 as the spec says (spawn-fcgi, lighttpd's bin-path), or as
///     // a CGI program when fd 0 is not a socket:
///     let server = Server::new(|req: &mut Request<'_>| {
///         req.send_response(200, "text/plain", "Hello, world!", &[], false)
///     })?;
///     // Or on an address: Server::bind("127.0.0.1:9000", handler)?
///     server.serve_forever()
/// }
/// ```
pub struct Server<H: Handler> {
    handler: Arc<H>,
    mode: Mode,
    settings: Settings,
    control: Arc<Control>,
    wake_rx: UnixStream,
}

enum Mode {
    /// The listening socket, until `serve_forever` takes it (and closes it
    /// when it shuts down).
    Listen(Mutex<Option<Listener>>),
    Cgi,
}

/// A cloneable handle to a server, usable from any thread: the seed's
/// `server` member and `shutdown()`.
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

/// What handles share with the serving threads.
struct Control {
    shutdown: Arc<AtomicBool>,
    wake_tx: UnixStream,
    /// The listening socket's descriptor, -1 once it is closed (or when
    /// there is none).
    fileno: AtomicI32,
    local_addr: String,
}

/// A connection and the request it is serving.
struct Conn {
    io: Io,
    /// Its entry in the table, and its token in the epoll.
    slot: usize,
    /// Registered with the epoll: from the first time it waits for the web
    /// server (a connection answered and closed before that never is).
    registered: bool,
    /// The params arena, held with the buffers while the connection is
    /// being served; lent back to the pool while it is parked idle.
    params: Option<Box<Params>>,
    begun: Option<Begun>,
    served: u64,
    deadline: Instant,
    /// In a lingering close: parked until the web server closes too or
    /// `deadline` passes; whoever its events wake drops what it sent.
    lingering: bool,
}

impl Conn {
    /// A connection just accepted, in `slot`, with the caller.
    fn new(io: Io, slot: usize) -> Conn {
        Conn {
            io,
            slot,
            params: None,
            begun: None,
            served: 0,
            deadline: Instant::now(),
            lingering: false,
            registered: false,
        }
    }
}

/// The epoll token of the stop pipe.
const STOP: u64 = u64::MAX;
/// The epoll token of the listening socket.
const LISTENER: u64 = u64::MAX - 1;

/// Where an open connection is.
#[allow(
    clippy::large_enum_variant,
    reason = "parked connections live in the table itself: parking allocates nothing"
)]
enum Entry {
    /// No connection.
    Free,
    /// With a worker. `notified`: its socket became readable since;
    /// `hangup`: the web server closed its side (or the socket failed);
    /// `stream`: its socket, shared with the worker, for a stop past the
    /// shutdown timeout to shut down.
    Busy {
        notified: bool,
        hangup: bool,
        stream: Arc<Stream>,
    },
    /// Parked: waiting for the web server, or for its deadline. Boxed: a
    /// kept connection moves in and out of the table with every request,
    /// and a pointer moves cheaper than its several hundred bytes.
    Parked(Box<Conn>),
}

impl Entry {
    /// With a worker, nothing new since it took it.
    fn taken(stream: Arc<Stream>) -> Entry {
        Entry::Busy {
            notified: false,
            hangup: false,
            stream,
        }
    }
}

/// Every open connection, by slot.
#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    free: Vec<usize>,
    /// No parked connection's deadline is earlier than this.
    next_deadline: Option<Instant>,
    /// The server stopped: connections are closed, not parked.
    closed: bool,
}

/// What parking a connection came to.
enum Parking {
    Parked,
    /// Bytes arrived while the worker had it: it stays with the worker
    /// (with whether the web server hung up).
    Notified(Box<Conn>, bool),
    /// The server stopped: close it.
    Closed(Box<Conn>),
}

impl Table {
    /// A slot for a new connection on `stream`, which is with the caller.
    fn reserve(&mut self, stream: Arc<Stream>) -> usize {
        let entry = Entry::taken(stream);
        match self.free.pop() {
            Some(slot) => {
                self.entries[slot] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        }
    }

    /// An event for `slot`: takes its connection if it is parked; if a
    /// worker has it, tells that worker to read again before parking it.
    fn claim(&mut self, slot: u64, hung_up: bool) -> Option<Box<Conn>> {
        let entry = self.entries.get_mut(usize::try_from(slot).ok()?)?;
        match entry {
            Entry::Busy {
                notified, hangup, ..
            } => {
                *notified = true;
                *hangup |= hung_up;
                None
            }
            Entry::Free => None,
            Entry::Parked(conn) => {
                let stream = conn.io.shared_stream();
                match std::mem::replace(entry, Entry::taken(stream)) {
                    Entry::Parked(conn) => Some(conn),
                    _ => None,
                }
            }
        }
    }

    /// Parks `conn` in its slot, unless it must stay with the worker or
    /// close.
    fn park(&mut self, conn: Box<Conn>) -> Parking {
        if self.closed {
            return Parking::Closed(conn);
        }
        let Some(entry) = self.entries.get_mut(conn.slot) else {
            return Parking::Closed(conn);
        };
        if let Entry::Busy {
            notified, hangup, ..
        } = entry
        {
            if std::mem::take(notified) {
                return Parking::Notified(conn, std::mem::take(hangup));
            }
        }
        self.next_deadline = Some(
            self.next_deadline
                .map_or(conn.deadline, |d| d.min(conn.deadline)),
        );
        *entry = Entry::Parked(conn);
        Parking::Parked
    }

    /// Frees the slot of a connection that closed.
    fn free(&mut self, slot: usize) {
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Entry::Free;
            self.free.push(slot);
        }
    }

    /// Takes every parked connection `select` picks (to close them), and
    /// works out the next deadline among those that stay.
    #[allow(
        clippy::vec_box,
        reason = "they go on to close_at_once, which takes connections boxed, as the table holds them"
    )]
    fn take_where(&mut self, mut select: impl FnMut(&Conn) -> bool) -> Vec<Box<Conn>> {
        let mut taken = Vec::new();
        let mut next: Option<Instant> = None;
        for entry in &mut self.entries {
            let picked = match entry {
                Entry::Parked(conn) if select(conn) => true,
                Entry::Parked(conn) => {
                    next = Some(next.map_or(conn.deadline, |d| d.min(conn.deadline)));
                    false
                }
                _ => false,
            };
            if let (true, Entry::Parked(conn)) = (picked, &*entry) {
                let stream = conn.io.shared_stream();
                if let Entry::Parked(conn) = std::mem::replace(entry, Entry::taken(stream)) {
                    taken.push(conn);
                }
            }
        }
        self.next_deadline = next;
        taken
    }

    /// Shuts down the socket of every connection a worker has, both ways:
    /// the web server sees it end, and the worker's reads and writes on it
    /// fail, so its handler returns and the worker closes it. Returns how
    /// many there were.
    fn cut_busy(&self) -> usize {
        let mut cut = 0;
        for entry in &self.entries {
            if let Entry::Busy { stream, .. } = entry {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                cut += 1;
            }
        }
        cut
    }
}

/// What a worker did with a connection.
enum Outcome {
    Park,
    Close,
}

/// The state the workers and the timekeeper share while serving.
struct Pool {
    settings: Settings,
    /// The listening socket: workers accept from it. `None` once shutting
    /// down: the socket is closed then, so new connections are refused
    /// (or, when another process holds the socket too, such as the web
    /// server that started this one, wait for the next instance).
    listener: Mutex<Option<Arc<Listener>>>,
    /// Memory of closed and idle connections, for the next ones.
    spare: Mutex<Vec<(Buffers, Box<Params>)>>,
    config: Config,
    /// Every open connection (edge-triggered, by slot), the listener
    /// (one-shot, re-armed after each accept) and the stop pipe.
    epoll: OwnedFd,
    table: Mutex<Table>,
    live: AtomicUsize,
    /// accept(2) failed (out of descriptors, say): accepting pauses for
    /// [`ACCEPT_PAUSE`].
    accept_paused: AtomicBool,
    /// Wakes the timekeeper.
    wake_tx: UnixStream,
    /// Written once to stop the workers and never drained, so that every
    /// worker's `epoll_wait` sees it.
    stop_tx: UnixStream,
    _stop_rx: UnixStream,
}

impl Pool {
    /// Shared state for serving; `listener` (if any) is registered with
    /// the epoll.
    fn new(
        settings: Settings,
        config: Config,
        listener: Option<Arc<Listener>>,
        wake_tx: UnixStream,
    ) -> io::Result<Pool> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let (stop_tx, stop_rx) = UnixStream::pair()?;
        epoll::add(
            &epoll,
            &stop_rx,
            epoll::EventData::new_u64(STOP),
            epoll::EventFlags::IN,
        )?;
        if let Some(listener) = &listener {
            epoll::add(
                &epoll,
                &**listener,
                epoll::EventData::new_u64(LISTENER),
                epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
            )?;
        }
        Ok(Pool {
            // Room for every spare it keeps: closing never allocates.
            spare: Mutex::new(Vec::with_capacity(settings.workers)),
            settings,
            config,
            listener: Mutex::new(listener),
            epoll,
            table: Mutex::new(Table::default()),
            live: AtomicUsize::new(0),
            accept_paused: AtomicBool::new(false),
            wake_tx,
            stop_tx,
            _stop_rx: stop_rx,
        })
    }

    fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn listener(&self) -> Option<Arc<Listener>> {
        self.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lets the next connection waiting on the listener wake a worker.
    fn rearm_listener(&self, listener: &Listener) {
        // Fails only once shutting down has unregistered it.
        let _ = epoll::modify(
            &self.epoll,
            listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        );
    }
}

/// After the shutdown timeout, how long the handlers of the connections
/// then cut get to return before `serve_forever` returns anyway.
const CUT_GRACE: Duration = Duration::from_millis(250);
/// How long accepting pauses after accept(2) failed.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl<H: Handler> Server<H> {
    /// A server on fd 0 (FCGI_LISTENSOCK_FILENO), Unix or TCP, as a web
    /// server or `spawn-fcgi` starts it. When fd 0 is not a listening
    /// socket, [`Server::serve_forever`] runs the handler once as a CGI
    /// program instead. Settings come from [`Settings::from_env`].
    pub fn new(handler: H) -> io::Result<Server<H>> {
        let mode = match listener::detect_fd0()? {
            Fd0::Listener(listener) => Mode::Listen(Mutex::new(Some(listener))),
            Fd0::NotASocket => Mode::Cgi,
        };
        Server::with_mode(handler, mode)
    }

    /// A server listening on `addr`: `host:port` for TCP, a path (or
    /// `unix:path`) for a Unix socket; see [`Listener::bind`].
    pub fn bind(addr: &str, handler: H) -> io::Result<Server<H>> {
        Server::with_mode(
            handler,
            Mode::Listen(Mutex::new(Some(Listener::bind(addr)?))),
        )
    }

    /// A server on a listener the caller has (`TcpListener`, `UnixListener`
    /// or [`Listener`]).
    pub fn from_listener(listener: impl Into<Listener>, handler: H) -> io::Result<Server<H>> {
        Server::with_mode(handler, Mode::Listen(Mutex::new(Some(listener.into()))))
    }

    /// A server on a listening socket given as a file descriptor.
    pub fn from_fd(fd: OwnedFd, handler: H) -> io::Result<Server<H>> {
        Server::with_mode(
            handler,
            Mode::Listen(Mutex::new(Some(Listener::from_fd(fd)?))),
        )
    }

    fn with_mode(handler: H, mode: Mode) -> io::Result<Server<H>> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (fileno, local_addr) = match &mode {
            Mode::Listen(listener) => {
                match &*listener.lock().unwrap_or_else(PoisonError::into_inner) {
                    Some(listener) => (listener.as_fd().as_raw_fd(), listener.local_addr()),
                    None => (-1, String::new()),
                }
            }
            Mode::Cgi => (-1, "cgi".to_string()),
        };
        Ok(Server {
            handler: Arc::new(handler),
            mode,
            settings: Settings::from_env()?,
            control: Arc::new(Control {
                shutdown: Arc::new(AtomicBool::new(false)),
                wake_tx,
                fileno: AtomicI32::new(fileno),
                local_addr,
            }),
            wake_rx,
        })
    }

    /// Replaces the settings (before `serve_forever`).
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The settings it serves with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The listening socket's file descriptor; -1 when running as CGI, and
    /// once the socket is closed: as a shutdown begins, when serving
    /// failed, or when the server is dropped (its handles live on).
    pub fn fileno(&self) -> RawFd {
        self.control.fileno.load(Ordering::SeqCst)
    }

    /// Whether fd 0 was not a socket, so `serve_forever` runs once as CGI.
    pub fn is_cgi(&self) -> bool {
        matches!(self.mode, Mode::Cgi)
    }

    /// A handle to shut the server down from any thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            control: Arc::clone(&self.control),
        }
    }

    /// Stops the server: the same as [`ServerHandle::shutdown`].
    pub fn shutdown(&self) {
        self.handle().shutdown();
    }

    /// Serves until shut down (by [`ServerHandle::shutdown`], or SIGTERM,
    /// SIGINT or SIGUSR1 with [`Settings::handle_signals`]): then stops
    /// accepting, lets in-flight requests finish (at most
    /// [`Settings::shutdown_timeout`], after which the connections still
    /// open are shut down) and returns `Ok`. As CGI, serves the
    /// one request and returns.
    ///
    /// The listening socket is closed as the shutdown begins, so new
    /// connections are refused at once rather than left waiting; a server
    /// serves once.
    pub fn serve_forever(&self) -> io::Result<()> {
        let listener = match &self.mode {
            Mode::Cgi => return self.serve_cgi(),
            Mode::Listen(listener) => listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .map(|mut listener| {
                    listener.begin_serving();
                    Arc::new(listener)
                })
                .ok_or_else(|| io::Error::other("this server has already served"))?,
        };
        // Whatever happens from here, the socket is closed when this
        // returns (the guard goes first, so the number is never stale).
        let _closed = Closed(&self.control.fileno);
        let _signals = if self.settings.handle_signals {
            Some(SignalGuard::install(&self.control)?)
        } else {
            None
        };
        // Non-blocking: workers accept until none is waiting.
        listener.set_nonblocking(true)?;
        let settings = self.settings.clone();
        let config = Config {
            max_conns: u32::try_from(settings.max_conns).unwrap_or(u32::MAX),
            max_reqs: u32::try_from(settings.workers).unwrap_or(u32::MAX),
            multiplex: false,
            max_reqs_per_conn: 1,
        };
        let pool = Arc::new(Pool::new(
            settings,
            config,
            Some(Arc::clone(&listener)),
            self.control.wake_tx.try_clone()?,
        )?);
        // The timekeeper's epoll, made before any worker accepts: once
        // connections have taken every descriptor, it could not be.
        let clock = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &clock,
            &self.wake_rx,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN,
        )?;
        for n in 0..pool.settings.workers.max(1) {
            let worker_pool = Arc::clone(&pool);
            let handler = Arc::clone(&self.handler);
            let handle = self.handle();
            let spawned = thread::Builder::new()
                .name(format!("fcgi-worker-{n}"))
                .spawn(move || worker(&worker_pool, &*handler, &handle));
            if let Err(error) = spawned {
                // The workers already started stop again.
                stop_workers(&pool);
                return Err(error);
            }
        }
        let result = self.keep_time(listener, &pool, &clock);
        // Closed by now unless the timekeeper failed.
        pool.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        stop_workers(&pool);
        result
    }

    /// The timekeeper: service actions, deadlines of parked connections,
    /// accept pauses, and the shutdown. It sleeps in `clock`, an epoll
    /// that watches the wake pipe.
    fn keep_time(&self, listener: Arc<Listener>, pool: &Pool, clock: &OwnedFd) -> io::Result<()> {
        let settings = &pool.settings;
        let mut listener = Some(listener);
        let mut events: Vec<epoll::Event> = Vec::with_capacity(4);
        let mut draining: Option<Instant> = None;
        let mut cut_until: Option<Instant> = None;
        let mut next_service = Instant::now();
        let mut accepts_paused_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(listener) = &listener {
                match accepts_paused_until {
                    Some(until) if now >= until => {
                        accepts_paused_until = None;
                        pool.accept_paused.store(false, Ordering::SeqCst);
                        pool.rearm_listener(listener);
                    }
                    None if pool.accept_paused.load(Ordering::SeqCst) => {
                        accepts_paused_until = Some(now + ACCEPT_PAUSE);
                    }
                    _ => {}
                }
            }
            if draining.is_none() && self.control.shutdown.load(Ordering::SeqCst) {
                eprintln!(
                    "simple-fastcgi: shutting down, {} connection(s) open",
                    pool.live.load(Ordering::SeqCst)
                );
                draining = Some(now + settings.shutdown_timeout);
                // No more accepting: the socket is closed (when the last
                // worker in accept(2) lets go of it).
                self.control.fileno.store(-1, Ordering::SeqCst);
                if let Some(listener) = listener.take() {
                    let _ = epoll::delete(&pool.epoll, &*listener);
                }
                pool.listener
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
            }
            if draining.is_some() {
                // Idle connections are closed (again each round: a worker
                // may have parked one as the shutdown began); the rest may
                // finish. Lingering closes go on: a reset now could make
                // the web server drop a response it is still reading.
                let idle = pool
                    .table()
                    .take_where(|conn| conn.begun.is_none() && !conn.lingering);
                for conn in idle {
                    close_at_once(pool, conn);
                }
            }
            if let Some(deadline) = draining {
                if pool.live.load(Ordering::SeqCst) == 0 {
                    break;
                }
                if now >= deadline {
                    // Past the shutdown timeout: the connections workers
                    // still have are cut, and their handlers, whose reads
                    // and writes then fail, get a moment to return, so
                    // that their connections close before this returns.
                    match cut_until {
                        None => {
                            let cut = pool.table().cut_busy();
                            eprintln!("simple-fastcgi: shutdown timeout: {cut} connection(s) cut");
                            cut_until = Some(now + CUT_GRACE);
                        }
                        Some(until) if now >= until => break,
                        Some(_) => {}
                    }
                }
            }
            if now >= next_service {
                self.handler.service_actions();
                next_service = now + settings.service_interval;
            }
            let next_deadline = pool.table().next_deadline;
            if next_deadline.is_some_and(|deadline| now >= deadline) {
                let expired = pool.table().take_where(|conn| conn.deadline <= now);
                for conn in expired {
                    close_at_once(pool, conn);
                }
            }
            let next_deadline = pool.table().next_deadline;
            let mut timeout = next_service
                .min(next_deadline.unwrap_or(next_service))
                .min(accepts_paused_until.unwrap_or(next_service))
                .saturating_duration_since(now);
            if draining.is_some() {
                timeout = timeout.min(Duration::from_millis(100));
            }
            let timespec = Timespec::try_from(timeout).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            events.clear();
            match epoll::wait(clock, spare_capacity(&mut events), Some(&timespec)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
            if !events.is_empty() {
                let mut drain = [0u8; 64];
                while matches!((&self.wake_rx).read(&mut drain), Ok(n) if n > 0) {}
            }
        }
        Ok(())
    }

    /// Runs the handler once as a CGI program.
    fn serve_cgi(&self) -> io::Result<()> {
        let mut params: Box<Params> = Box::default();
        cgi::environ_params(&mut params)?;
        let mut io = CgiIo::new(&params);
        let handle = self.handle();
        let mut req = Request {
            backend: Backend::Cgi(&mut io),
            params: &params,
            server: &handle,
            role: cgi::role(&params),
            request_id: 0,
            keep_conn: false,
            written: false,
        };
        let status = run_handler(&*self.handler, &mut req);
        io.flush()?;
        match status {
            0 => Ok(()),
            status => Err(io::Error::other(format!(
                "the handler failed (status {status})"
            ))),
        }
    }
}

/// Sets a server's `fileno` to -1 when dropped: held while its listening
/// socket is open.
struct Closed<'a>(&'a AtomicI32);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.store(-1, Ordering::SeqCst);
    }
}

impl<H: Handler> Drop for Server<H> {
    fn drop(&mut self) {
        // The listening socket goes with the server (after this runs).
        self.control.fileno.store(-1, Ordering::SeqCst);
    }
}

impl ServerHandle {
    /// Asks the server to stop: it stops accepting, lets in-flight requests
    /// finish, and `serve_forever` returns. Safe to call from any thread,
    /// any number of times.
    pub fn shutdown(&self) {
        self.control.shutdown.store(true, Ordering::SeqCst);
        let _ = (&self.control.wake_tx).write(&[1]);
    }

    /// Whether a shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.control.shutdown.load(Ordering::SeqCst)
    }

    /// The listening socket's file descriptor; -1 when running as CGI, and
    /// once the socket is closed: as a shutdown begins, when serving
    /// failed, or when the server is dropped.
    pub fn fileno(&self) -> RawFd {
        self.control.fileno.load(Ordering::SeqCst)
    }

    /// The address the server listens on (`127.0.0.1:9000`,
    /// `unix:/run/app.sock`, or `cgi`).
    pub fn local_addr(&self) -> &str {
        &self.control.local_addr
    }
}

/// Tells the workers to stop once they are done, and closes the parked
/// connections (at once: the server is stopping, nobody waits for lingering
/// closes). Connections still with a worker are closed when it lets go.
fn stop_workers(pool: &Pool) {
    let parked = {
        let mut table = pool.table();
        table.closed = true;
        table.take_where(|_| true)
    };
    for conn in parked {
        close_at_once(pool, conn);
    }
    let _ = (&pool.stop_tx).write(&[1]);
}

/// Accepts one connection that may be served (over `max_conns`, or from an
/// address FCGI_WEB_SERVER_ADDRS does not list, connections are closed at
/// once) and registers it, with the caller; `None` when none is waiting.
fn accept_one(listener: &Listener, pool: &Pool) -> Option<Box<Conn>> {
    let settings = &pool.settings;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(error) => {
                // Out of descriptors or memory: accepting pauses for a
                // moment (the listener would stay readable and wake the
                // workers in a loop), then the timekeeper resumes it.
                if !pool.accept_paused.swap(true, Ordering::SeqCst) {
                    eprintln!("simple-fastcgi: accept failed, pausing accepts: {error}");
                }
                pool.wake();
                return None;
            }
        };
        if let (Some(allowed), Some(ip)) = (&settings.web_server_addrs, peer) {
            if !allowed.allows(ip) {
                eprintln!(
                    "simple-fastcgi: refused a connection from {ip}: not in FCGI_WEB_SERVER_ADDRS"
                );
                continue;
            }
        }
        // Counted in one step with the check, so workers accepting at once
        // cannot both take the last place.
        let admitted = pool
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < settings.max_conns).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            // Over the limit: a clean close, not a hang.
            continue;
        }
        let io = match Io::new(stream, pool.config, settings) {
            Ok(io) => io,
            Err(error) => {
                eprintln!("simple-fastcgi: cannot set up a connection: {error}");
                pool.live.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
        };
        let slot = pool.table().reserve(io.shared_stream());
        return Some(Box::new(Conn::new(io, slot)));
    }
}

/// Closes a connection and keeps its memory for the next one. When the web
/// server may still be sending, the connection is parked for a lingering
/// close instead (at most [`Settings::lingering_close`]), so no worker
/// waits on it.
fn close(pool: &Pool, mut conn: Box<Conn>) {
    if conn.io.wants_linger() {
        let buffers = conn.io.begin_linger();
        if let Some(params) = conn.params.take() {
            keep_spare(pool, buffers, params);
        }
        conn.lingering = true;
        conn.begun = None;
        conn.deadline = Instant::now() + pool.settings.lingering_close;
        linger(pool, conn);
        return;
    }
    close_at_once(pool, conn);
}

/// A step of a lingering close: drops what the web server sent, then
/// parks the connection until it sends more, or closes it once it closed.
fn linger(pool: &Pool, mut conn: Box<Conn>) {
    loop {
        if conn.io.drain() {
            close_at_once(pool, conn);
            return;
        }
        // `drain` stops after a while even when more is there: re-arming
        // (while this worker still has the connection) makes the epoll
        // look again, so what is left wakes a worker later.
        if let Err(error) = watch(pool, &mut conn) {
            eprintln!("simple-fastcgi: closing a connection: epoll: {error}");
            close_at_once(pool, conn);
            return;
        }
        let parking = pool.table().park(conn);
        match parking {
            Parking::Parked => return,
            Parking::Notified(again, _) => conn = again,
            Parking::Closed(conn) => {
                close_at_once(pool, conn);
                return;
            }
        }
    }
}

/// Registers `conn` with the epoll (edge-triggered, under its slot), or
/// re-arms it: either way the epoll looks at the socket now, so bytes
/// already there wake a worker too. Called by the worker that has it.
fn watch(pool: &Pool, conn: &mut Conn) -> io::Result<()> {
    let data = epoll::EventData::new_u64(conn.slot as u64);
    let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ET;
    if conn.registered {
        epoll::modify(&pool.epoll, &conn.io, data, flags)?;
    } else {
        epoll::add(&pool.epoll, &conn.io, data, flags)?;
        conn.registered = true;
    }
    Ok(())
}

/// Closes a connection without a lingering close: connections that timed
/// out or are idle, lingering ones that are done, and all of them when the
/// server stops.
fn close_at_once(pool: &Pool, conn: Box<Conn>) {
    let Conn {
        io, slot, params, ..
    } = *conn;
    // Closing the socket unregisters it (nothing else holds it: sockets
    // are opened close-on-exec and never duplicated); an event already
    // taken for it finds the slot free, or a connection that reads,
    // finds nothing, and waits again. The slot, which shares the socket,
    // is freed first, so that the socket closes here.
    pool.table().free(slot);
    let buffers = io.close();
    pool.live.fetch_sub(1, Ordering::SeqCst);
    if let Some(params) = params {
        keep_spare(pool, buffers, params);
    }
}

/// Keeps a connection's memory for the next one, up to `workers` sets (the
/// most that can be in use at once by connections being served); beyond
/// that it is freed.
fn keep_spare(pool: &Pool, buffers: Buffers, params: Box<Params>) {
    let mut spare = pool.spare.lock().unwrap_or_else(PoisonError::into_inner);
    if spare.len() < pool.settings.workers {
        spare.push((buffers, params));
    }
}

/// A fresh params arena, built in place on the heap: made on the stack and
/// moved, its 64 KiB would fault in that much of every worker's stack.
fn boxed_params() -> Box<Params> {
    Box::write(Box::new_uninit(), Params::new())
}

/// Gives `conn` buffers and a params arena if it lent them out.
fn equip(pool: &Pool, conn: &mut Conn) {
    if conn.io.has_buffers() && conn.params.is_some() {
        return;
    }
    let (buffers, params) = pool
        .spare
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
        .unwrap_or_else(|| (Buffers::new(), boxed_params()));
    conn.io.attach(buffers);
    conn.params = Some(params);
}

/// Serves `conn` on this worker until it waits for the web server, then
/// any connection waiting to be accepted, until none is.
fn run<H: Handler>(pool: &Pool, handler: &H, handle: &ServerHandle, mut conn: Box<Conn>) {
    loop {
        match serve(&mut conn, pool, handler, handle) {
            Outcome::Park => match park(pool, conn) {
                Some(again) => conn = again,
                None => return,
            },
            Outcome::Close => {
                close(pool, conn);
                if handle.is_shutting_down() {
                    pool.wake();
                    return;
                }
                // The next connection, if one is waiting, without a
                // round through the epoll.
                match pool.listener().and_then(|l| accept_one(&l, pool)) {
                    Some(next) => conn = next,
                    None => return,
                }
            }
        }
    }
}

/// Parks a connection that waits for the web server; between requests,
/// with nothing buffered, its memory goes back to the pool. `Some` when it
/// must be served on at once: bytes arrived in the meantime.
fn park(pool: &Pool, mut conn: Box<Conn>) -> Option<Box<Conn>> {
    let settings = &pool.settings;
    // (Shutting down, `serve` closes instead of parking between requests,
    // and the timekeeper closes any parked as the shutdown began.)
    if conn.begun.is_none() {
        if let Some(buffers) = conn.io.lend() {
            if let Some(params) = conn.params.take() {
                keep_spare(pool, buffers, params);
            }
        }
    }
    // In the middle of a request, or of a record before one began: the
    // read timeout. Between requests: the idle timeout.
    conn.deadline = if conn.begun.is_some() || conn.io.is_mid_input() {
        conn.io.last_data() + settings.read_timeout
    } else {
        Instant::now() + settings.idle_timeout
    };
    if !conn.registered {
        if let Err(error) = watch(pool, &mut conn) {
            eprintln!("simple-fastcgi: closing a connection: epoll: {error}");
            close_at_once(pool, conn);
            return None;
        }
    }
    let parking = pool.table().park(conn);
    match parking {
        Parking::Parked => None,
        Parking::Notified(mut conn, hangup) => {
            conn.io.expect_data(hangup);
            Some(conn)
        }
        Parking::Closed(conn) => {
            close_at_once(pool, conn);
            None
        }
    }
}

/// A worker thread: waits for a ready connection (or one to accept) and
/// serves it, until the server stops.
fn worker<H: Handler>(pool: &Pool, handler: &H, handle: &ServerHandle) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1);
    loop {
        events.clear();
        match epoll::wait(&pool.epoll, spare_capacity(&mut events), None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(error) => {
                eprintln!("simple-fastcgi: a worker stops: epoll: {error}");
                return;
            }
        }
        let Some(event) = events.first() else {
            continue;
        };
        match event.data.u64() {
            STOP => return,
            LISTENER => {
                let Some(listener) = pool.listener() else {
                    continue;
                };
                let conn = accept_one(&listener, pool);
                if !pool.accept_paused.load(Ordering::SeqCst) {
                    pool.rearm_listener(&listener);
                }
                drop(listener);
                if let Some(conn) = conn {
                    run(pool, handler, handle, conn);
                }
            }
            slot => {
                // A hang-up may come with the last bytes in one event: then
                // a read that takes the bytes does not empty the socket,
                // the end is still to be read.
                let flags = event.flags;
                let hangup = flags.intersects(
                    epoll::EventFlags::RDHUP | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                );
                let claimed = pool.table().claim(slot, hangup);
                match claimed {
                    Some(conn) if conn.lingering => linger(pool, conn),
                    Some(mut conn) => {
                        conn.io.expect_data(hangup);
                        run(pool, handler, handle, conn);
                    }
                    None => {}
                }
            }
        }
    }
}

/// Serves requests on `conn` while bytes keep coming.
fn serve<H: Handler>(conn: &mut Conn, pool: &Pool, handler: &H, handle: &ServerHandle) -> Outcome {
    let settings = &pool.settings;
    equip(pool, conn);
    loop {
        let Some(params) = conn.params.as_deref_mut() else {
            return Outcome::Close;
        };
        let ready = match conn.io.next_request(params, &mut conn.begun) {
            Ok(ready) => ready,
            Err(error) => {
                eprintln!("simple-fastcgi: closing a connection: {error}");
                return Outcome::Close;
            }
        };
        match ready {
            Ready::Request => {
                let Some(begun) = conn.begun.take() else {
                    continue;
                };
                let close = match run_request(conn, begun, handler, handle) {
                    Ok(close) => close,
                    Err(error) => {
                        if !conn.io.is_gone() {
                            eprintln!("simple-fastcgi: closing a connection: {error}");
                        }
                        true
                    }
                };
                conn.served += 1;
                let limit = settings
                    .max_requests_per_conn
                    .is_some_and(|max| conn.served >= max);
                if close || limit || handle.is_shutting_down() || conn.io.is_gone() {
                    return Outcome::Close;
                }
            }
            Ready::Closed => return Outcome::Close,
            Ready::NeedInput => {
                if handle.is_shutting_down() && conn.begun.is_none() && !conn.io.has_buffered() {
                    return Outcome::Close;
                }
                // The last read took all there was: the next bytes come
                // with an event.
                if conn.io.is_drained() {
                    return Outcome::Park;
                }
                match conn.io.fill(false) {
                    Ok(Fill::Data) => {}
                    Ok(Fill::Eof) | Err(_) => return Outcome::Close,
                    Ok(Fill::TimedOut) => return Outcome::Park,
                }
            }
        }
    }
}

/// Runs one request whose params are complete; returns whether the
/// connection must close afterwards.
fn run_request<H: Handler>(
    conn: &mut Conn,
    begun: Begun,
    handler: &H,
    handle: &ServerHandle,
) -> io::Result<bool> {
    let Begun {
        request_id,
        role,
        keep_conn,
        mut output,
        params_error,
        aborted,
    } = begun;
    let Conn { io, params, .. } = conn;
    let params = params
        .as_deref()
        .ok_or_else(|| io::Error::other("a request without its params arena"))?;
    io.start_request(request_id);
    if aborted {
        // Aborted before its handler started: end it now (spec 5.4).
        return io.finish(output, 0);
    }
    let mut req = Request {
        backend: Backend::Fcgi {
            io,
            output: &mut output,
        },
        params,
        server: handle,
        role,
        request_id,
        keep_conn,
        written: false,
    };
    let app_status = match params_error {
        Some(error) => {
            eprintln!("simple-fastcgi: request {request_id} refused: {error}");
            req.send_response(error.http_status(), "", (), &[], false)?;
            1
        }
        None => run_handler(handler, &mut req),
    };
    io.finish(output, app_status)
}

/// Runs the handler, turning an error or a panic into a 500 (when nothing
/// was sent yet) and a non-zero app status.
fn run_handler<H: Handler>(handler: &H, req: &mut Request<'_>) -> u32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(req)));
    let (status, what) = match outcome {
        Ok(Ok(())) => return 0,
        // The web server gave up on the request (its client went away):
        // the handler's failure is the expected outcome, not worth a line.
        Ok(Err(_)) if req.aborted() => return 1,
        Ok(Err(error)) => (1, format!("failed: {error}")),
        Err(panic) => (101, format!("panicked: {}", panic_message(&*panic))),
    };
    let uri = req.param("REQUEST_URI").unwrap_or("");
    eprintln!(
        "simple-fastcgi: the handler for request {}{}{uri} {what}",
        req.request_id,
        if uri.is_empty() { "" } else { " " }
    );
    if !req.response_sent() && !req.aborted() {
        req.discard_unsent();
        let _ = req.send_response(500, "", (), &[], false);
    }
    status
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// SIGTERM, SIGINT and SIGUSR1 handlers for the time `serve_forever` runs.
struct SignalGuard {
    ids: Vec<signal_hook::SigId>,
}

impl SignalGuard {
    fn install(control: &Control) -> io::Result<SignalGuard> {
        let mut ids = Vec::new();
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGUSR1,
        ] {
            ids.push(signal_hook::flag::register(
                signal,
                Arc::clone(&control.shutdown),
            )?);
            ids.push(signal_hook::low_level::pipe::register(
                signal,
                control.wake_tx.try_clone()?,
            )?);
        }
        Ok(SignalGuard { ids })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Serves one connection on the calling thread until it closes, through
/// the same request handling as [`Server::serve_forever`] (the core, the
/// params arena, the handler, response framing), without the epoll and
/// the workers. For fuzzing the runtime in memory (`fuzz/`); not a way to
/// run a server.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn serve_one_connection<H: Handler>(
    stream: UnixStream,
    handler: &H,
    settings: Settings,
) -> io::Result<()> {
    let (wake_tx, _wake_rx) = UnixStream::pair()?;
    let handle = ServerHandle {
        control: Arc::new(Control {
            shutdown: Arc::new(AtomicBool::new(false)),
            wake_tx,
            fileno: AtomicI32::new(-1),
            local_addr: "fuzzing".to_string(),
        }),
    };
    let config = Config {
        max_conns: 1,
        max_reqs: 1,
        multiplex: false,
        max_reqs_per_conn: 1,
    };
    let pool = Pool::new(settings, config, None, handle.control.wake_tx.try_clone()?)?;
    pool.live.store(1, Ordering::SeqCst);
    let io = Io::new(
        crate::listener::Stream::Unix(stream),
        pool.config,
        &pool.settings,
    )?;
    let slot = pool.table().reserve(io.shared_stream());
    let mut conn = Box::new(Conn::new(io, slot));
    // Parking only means "nothing to read yet": wait for bytes or the end
    // (at most the read timeout), then serve again.
    while let Outcome::Park = serve(&mut conn, &pool, handler, &handle) {
        let mut fds = [rustix::event::PollFd::new(
            &conn.io,
            rustix::event::PollFlags::IN,
        )];
        let timeout = Timespec::try_from(pool.settings.read_timeout).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        if rustix::event::poll(&mut fds, Some(&timeout))? == 0 {
            break;
        }
        conn.io.expect_data(false);
    }
    close_at_once(&pool, conn);
    Ok(())
}
