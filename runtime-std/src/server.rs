//! The server: a poller thread that accepts connections and watches idle
//! ones, and a bounded pool of worker threads that run the handler.
//!
//! A connection is either with a worker (bytes are flowing or a handler
//! runs) or parked with the poller (it waits for the web server). A worker
//! that finishes a request waits a short [`Settings::linger`] for the next
//! one on the same connection (one `read`, no hand-off, in steady state),
//! unless other connections are queued, then parks it. So idle and slow
//! connections cost no thread, and busy ones cost no extra syscalls.

use std::any::Any;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use simple_fastcgi_core::{Config, Params};

use crate::cgi::{self, CgiIo};
use crate::conn::{Begun, Buffers, Fill, Io, Ready};
use crate::handler::Handler;
use crate::listener::{self, Fd0, Listener};
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
    fileno: RawFd,
    local_addr: String,
}

/// A connection and the request it is serving.
struct Conn {
    io: Io,
    /// The params arena, held with the buffers while the connection is
    /// being served; lent back to the pool while it is parked idle.
    params: Option<Box<Params>>,
    begun: Option<Begun>,
    served: u64,
    deadline: Instant,
    /// In a lingering close: parked with the poller, which drops what the
    /// web server still sends until it closes or `deadline` passes.
    lingering: bool,
}

/// The poller's epoll token for its wake pipe.
const WAKE: u64 = u64::MAX;
/// The poller's epoll token for the listening socket.
const LISTENER: u64 = u64::MAX - 1;

/// Connections parked with the poller, each registered with its epoll
/// under its slot number.
#[derive(Default)]
struct Parked {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// No parked connection's deadline is earlier than this.
    next_deadline: Option<Instant>,
}

impl Parked {
    /// Parks `conn` and registers it; when that fails, says so and hands
    /// the connection back to be closed.
    fn put(&mut self, epoll: &OwnedFd, conn: Conn) -> Option<Conn> {
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let data = epoll::EventData::new_u64(slot as u64);
        if let Err(error) = epoll::add(epoll, &conn.io, data, epoll::EventFlags::IN) {
            self.free.push(slot);
            eprintln!("simple-fastcgi: closing a connection: epoll: {error}");
            return Some(conn);
        }
        self.next_deadline = Some(
            self.next_deadline
                .map_or(conn.deadline, |d| d.min(conn.deadline)),
        );
        if slot == self.slots.len() {
            self.slots.push(Some(conn));
        } else {
            self.slots[slot] = Some(conn);
        }
        None
    }

    /// Unparks the connection in `slot` (if any) and unregisters it.
    fn take(&mut self, epoll: &OwnedFd, slot: u64) -> Option<Conn> {
        let index = usize::try_from(slot).ok()?;
        let conn = self.slots.get_mut(index)?.take()?;
        // It is closed or handed to a worker next: a failed unregistration
        // only means an event that finds an empty slot.
        let _ = epoll::delete(epoll, &conn.io);
        self.free.push(index);
        Some(conn)
    }

    /// Unparks every connection `select` picks, and works out the next
    /// deadline among those that stay.
    fn take_where(&mut self, epoll: &OwnedFd, mut select: impl FnMut(&Conn) -> bool) -> Vec<Conn> {
        let mut taken = Vec::new();
        let mut next: Option<Instant> = None;
        for index in 0..self.slots.len() {
            let picked = match &self.slots[index] {
                Some(conn) if select(conn) => true,
                Some(conn) => {
                    next = Some(next.map_or(conn.deadline, |d| d.min(conn.deadline)));
                    false
                }
                None => false,
            };
            if picked {
                taken.extend(self.take(epoll, index as u64));
            }
        }
        self.next_deadline = next;
        taken
    }
}

/// What a worker did with a connection.
enum Outcome {
    Park,
    Close,
}

/// The state the poller and the workers share while serving.
struct Pool {
    settings: Settings,
    /// The listening socket: workers accept from it too. `None` once
    /// shutting down: the socket is closed then, so new connections are
    /// refused (or, when another process holds the socket too, such as the
    /// web server that started this one, wait for the next instance).
    listener: Mutex<Option<Arc<Listener>>>,
    /// Memory of closed connections, for the next ones.
    spare: Mutex<Vec<(Buffers, Box<Params>)>>,
    config: Config,
    queue: Mutex<Queue>,
    work: Condvar,
    queued: AtomicUsize,
    live: AtomicUsize,
    parked: Mutex<mpsc::Sender<Conn>>,
    /// accept(2) failed (out of descriptors, say): the poller pauses
    /// accepting for [`ACCEPT_PAUSE`].
    accept_paused: AtomicBool,
    /// Wakes the poller.
    wake_tx: UnixStream,
}

impl Pool {
    fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }
}

/// How long the poller stops accepting after accept(2) failed.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

struct Queue {
    conns: VecDeque<Conn>,
    closed: bool,
}

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
                fileno,
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

    /// The listening socket's file descriptor; -1 when running as CGI.
    /// It is closed once a shutdown begins, after which the number may
    /// belong to another file.
    pub fn fileno(&self) -> RawFd {
        self.control.fileno
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
    /// [`Settings::shutdown_timeout`]) and returns `Ok`. As CGI, serves the
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
        let _signals = if self.settings.handle_signals {
            Some(SignalGuard::install(&self.control)?)
        } else {
            None
        };
        // Non-blocking: the poller and the workers all accept from it.
        listener.set_nonblocking(true)?;
        let (parked_tx, parked_rx) = mpsc::channel();
        let settings = self.settings.clone();
        let pool = Arc::new(Pool {
            config: Config {
                max_conns: u32::try_from(settings.max_conns).unwrap_or(u32::MAX),
                max_reqs: u32::try_from(settings.workers).unwrap_or(u32::MAX),
                multiplex: false,
                max_reqs_per_conn: 1,
            },
            // Room for every spare it keeps: closing never allocates.
            spare: Mutex::new(Vec::with_capacity(settings.workers)),
            settings,
            listener: Mutex::new(Some(Arc::clone(&listener))),
            queue: Mutex::new(Queue {
                conns: VecDeque::new(),
                closed: false,
            }),
            work: Condvar::new(),
            queued: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            parked: Mutex::new(parked_tx),
            accept_paused: AtomicBool::new(false),
            wake_tx: self.control.wake_tx.try_clone()?,
        });
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
        let result = self.poll(listener, &pool, &parked_rx);
        // Closed by now unless the poller failed.
        pool.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        stop_workers(&pool);
        result
    }

    /// The poller: accepts, parks idle connections, dispatches ready ones.
    /// Parked connections are registered with epoll while they are parked,
    /// so each wake costs in proportion to the connections that are ready,
    /// not to all that are open: a thousand idle or trickling connections
    /// do not slow down the one that has a request.
    fn poll(
        &self,
        listener: Arc<Listener>,
        pool: &Pool,
        parked_rx: &mpsc::Receiver<Conn>,
    ) -> io::Result<()> {
        let settings = &pool.settings;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &self.wake_rx,
            epoll::EventData::new_u64(WAKE),
            epoll::EventFlags::IN,
        )?;
        epoll::add(
            &epoll,
            &*listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN,
        )?;
        let mut listener = Some(listener);
        let mut parked = Parked::default();
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut draining: Option<Instant> = None;
        let mut next_service = Instant::now();
        let mut accepts_paused_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let (Some(until), Some(listener)) = (accepts_paused_until, &listener) {
                if now >= until {
                    accepts_paused_until = None;
                    pool.accept_paused.store(false, Ordering::SeqCst);
                    epoll::add(
                        &epoll,
                        &**listener,
                        epoll::EventData::new_u64(LISTENER),
                        epoll::EventFlags::IN,
                    )?;
                }
            }
            if draining.is_none() && self.control.shutdown.load(Ordering::SeqCst) {
                eprintln!(
                    "simple-fastcgi: shutting down, {} connection(s) open",
                    pool.live.load(Ordering::SeqCst)
                );
                draining = Some(now + settings.shutdown_timeout);
                // No more accepting: the socket is closed (when the last
                // worker in accept(2) lets go of it). Idle connections are
                // closed; the rest may finish.
                if let Some(listener) = listener.take() {
                    if accepts_paused_until.is_none() {
                        epoll::delete(&epoll, &*listener)?;
                    }
                }
                pool.listener
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                // (Lingering closes go on: a reset now could make the web
                // server drop a response it is still reading.)
                for conn in
                    parked.take_where(&epoll, |conn| conn.begun.is_none() && !conn.lingering)
                {
                    close_at_once(pool, conn);
                }
            }
            if let Some(deadline) = draining {
                if pool.live.load(Ordering::SeqCst) == 0 || now >= deadline {
                    break;
                }
            }
            if now >= next_service {
                self.handler.service_actions();
                next_service = now + settings.service_interval;
            }
            if parked.next_deadline.is_some_and(|deadline| now >= deadline) {
                for conn in parked.take_where(&epoll, |conn| conn.deadline <= now) {
                    close_at_once(pool, conn);
                }
            }
            let mut timeout = next_service
                .min(parked.next_deadline.unwrap_or(next_service))
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
            match epoll::wait(&epoll, spare_capacity(&mut events), Some(&timespec)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(error) => return Err(error.into()),
            }
            let mut listener_ready = false;
            for event in &events {
                match event.data.u64() {
                    WAKE => {
                        let mut drain = [0u8; 64];
                        while matches!((&self.wake_rx).read(&mut drain), Ok(n) if n > 0) {}
                    }
                    LISTENER => listener_ready = draining.is_none(),
                    slot => match parked.take(&epoll, slot) {
                        // Closing: drop what the web server sent, until it
                        // closes too.
                        Some(mut conn) if conn.lingering => {
                            if conn.io.drain() {
                                close_at_once(pool, conn);
                            } else if let Some(conn) = parked.put(&epoll, conn) {
                                close_at_once(pool, conn);
                            }
                        }
                        // Bytes (or an end) to read: a worker's turn.
                        Some(conn) => dispatch(pool, conn),
                        None => {}
                    },
                }
            }
            while let Ok(conn) = parked_rx.try_recv() {
                if draining.is_some() && conn.begun.is_none() && !conn.lingering {
                    close_at_once(pool, conn);
                } else if let Some(conn) = parked.put(&epoll, conn) {
                    close_at_once(pool, conn);
                }
            }
            if let (true, Some(listener)) = (listener_ready, &listener) {
                self.accept(listener, pool);
                if pool.accept_paused.load(Ordering::SeqCst) && accepts_paused_until.is_none() {
                    epoll::delete(&epoll, &**listener)?;
                    accepts_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                }
            }
        }
        for conn in parked.take_where(&epoll, |_| true) {
            close_at_once(pool, conn);
        }
        Ok(())
    }

    fn accept(&self, listener: &Listener, pool: &Pool) {
        while let Some(conn) = accept_one(listener, pool) {
            dispatch(pool, conn);
        }
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

    /// The listening socket's file descriptor; -1 when running as CGI.
    /// It is closed once a shutdown begins, after which the number may
    /// belong to another file.
    pub fn fileno(&self) -> RawFd {
        self.control.fileno
    }

    /// The address the server listens on (`127.0.0.1:9000`,
    /// `unix:/run/app.sock`, or `cgi`).
    pub fn local_addr(&self) -> &str {
        &self.control.local_addr
    }
}

/// Tells the workers to stop once they are done, and closes the connections
/// still waiting for one (at once: the server is stopping, nobody waits for
/// lingering closes).
fn stop_workers(pool: &Pool) {
    let mut queue = pool.queue.lock().unwrap_or_else(PoisonError::into_inner);
    queue.closed = true;
    let waiting: Vec<Conn> = queue.conns.drain(..).collect();
    drop(queue);
    pool.work.notify_all();
    for conn in waiting {
        close_at_once(pool, conn);
    }
}

/// Hands a connection to the workers.
fn dispatch(pool: &Pool, conn: Conn) {
    let mut queue = pool.queue.lock().unwrap_or_else(PoisonError::into_inner);
    if queue.closed {
        drop(queue);
        close_at_once(pool, conn);
        return;
    }
    queue.conns.push_back(conn);
    pool.queued.fetch_add(1, Ordering::SeqCst);
    drop(queue);
    pool.work.notify_one();
}

/// Accepts one connection that may be served (over `max_conns`, or from an
/// address FCGI_WEB_SERVER_ADDRS does not list, connections are closed at
/// once); `None` when none is waiting.
fn accept_one(listener: &Listener, pool: &Pool) -> Option<Conn> {
    let settings = &pool.settings;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(error) => {
                // Out of descriptors or memory: the poller stops watching
                // the listener for a moment (it would stay readable and
                // wake the poller in a loop), then tries again.
                if !pool.accept_paused.swap(true, Ordering::SeqCst) {
                    eprintln!("simple-fastcgi: accept failed, pausing accepts: {error}");
                }
                return None;
            }
        };
        if pool.live.load(Ordering::SeqCst) >= settings.max_conns {
            // Over the limit: a clean close, not a hang.
            continue;
        }
        if let (Some(allowed), Some(ip)) = (&settings.web_server_addrs, peer) {
            if !allowed.allows(ip) {
                eprintln!(
                    "simple-fastcgi: refused a connection from {ip}: not in FCGI_WEB_SERVER_ADDRS"
                );
                continue;
            }
        }
        match Io::new(stream, pool.config, settings) {
            Ok(io) => {
                pool.live.fetch_add(1, Ordering::SeqCst);
                return Some(Conn {
                    io,
                    params: None,
                    begun: None,
                    served: 0,
                    deadline: Instant::now(),
                    lingering: false,
                });
            }
            Err(error) => eprintln!("simple-fastcgi: cannot set up a connection: {error}"),
        }
    }
}

/// Closes a connection and keeps its memory for the next one. When the web
/// server may still be sending, the connection goes to the poller for a
/// lingering close instead (at most [`Settings::lingering_close`]), so no
/// worker waits on it.
fn close(pool: &Pool, mut conn: Conn) {
    if conn.io.wants_linger() {
        let buffers = conn.io.begin_linger();
        if let Some(params) = conn.params.take() {
            keep_spare(pool, buffers, params);
        }
        conn.lingering = true;
        conn.begun = None;
        conn.deadline = Instant::now() + pool.settings.lingering_close;
        hand_to_poller(pool, conn);
        return;
    }
    let Conn { io, params, .. } = conn;
    let buffers = io.close();
    pool.live.fetch_sub(1, Ordering::SeqCst);
    if let Some(params) = params {
        keep_spare(pool, buffers, params);
    }
}

/// Closes a connection without a lingering close: connections that timed
/// out or are idle, lingering ones that are done, and all of them when the
/// server stops.
fn close_at_once(pool: &Pool, conn: Conn) {
    let Conn { io, params, .. } = conn;
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
/// moved, its 64 KiB would fault in that much of every worker's stack and
/// all of the heap block, though an arena holds only what it was sent.
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

/// Serves `conn` on this worker, and then any connection waiting to be
/// accepted, until none is.
fn dispatch_local<H: Handler>(pool: &Pool, handler: &H, handle: &ServerHandle, mut conn: Conn) {
    loop {
        match serve(&mut conn, pool, handler, handle) {
            Outcome::Park => {
                park(pool, conn);
                return;
            }
            Outcome::Close => {
                close(pool, conn);
                if handle.is_shutting_down() {
                    pool.wake();
                    return;
                }
                let listener = pool
                    .listener
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match listener.and_then(|listener| accept_one(&listener, pool)) {
                    Some(next) => conn = next,
                    None => return,
                }
            }
        }
    }
}

/// Hands a connection that waits for the web server to the poller. Between
/// requests, with nothing buffered, its memory goes back to the pool.
fn park(pool: &Pool, mut conn: Conn) {
    let settings = &pool.settings;
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
    hand_to_poller(pool, conn);
}

/// Sends `conn` to the poller and wakes it; when the poller has stopped,
/// the server is stopping and the connection is closed.
fn hand_to_poller(pool: &Pool, conn: Conn) {
    let sent = pool
        .parked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(conn);
    match sent {
        Ok(()) => pool.wake(),
        Err(mpsc::SendError(conn)) => close_at_once(pool, conn),
    }
}

/// A worker thread: serves connections from the queue until it closes.
fn worker<H: Handler>(pool: &Pool, handler: &H, handle: &ServerHandle) {
    loop {
        let conn = {
            let mut queue = pool.queue.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(conn) = queue.conns.pop_front() {
                    pool.queued.fetch_sub(1, Ordering::SeqCst);
                    break conn;
                }
                if queue.closed {
                    return;
                }
                queue = pool
                    .work
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        // A connection that closes is followed by any connection waiting
        // to be accepted, served here at once without a hand-off.
        dispatch_local(pool, handler, handle, conn);
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
                // Others waiting for a worker: read what is there, but do
                // not linger for more.
                let wait = pool.queued.load(Ordering::SeqCst) == 0;
                match conn.io.fill(wait) {
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
    io.start_request(request_id, role);
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
/// params arena, the handler, response framing), without the poller and
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
            fileno: -1,
            local_addr: "fuzzing".to_string(),
        }),
    };
    let (parked_tx, _parked_rx) = mpsc::channel();
    let pool = Pool {
        config: Config {
            max_conns: 1,
            max_reqs: 1,
            multiplex: false,
            max_reqs_per_conn: 1,
        },
        spare: Mutex::new(Vec::with_capacity(1)),
        settings,
        listener: Mutex::new(None),
        queue: Mutex::new(Queue {
            conns: VecDeque::new(),
            closed: false,
        }),
        work: Condvar::new(),
        queued: AtomicUsize::new(0),
        live: AtomicUsize::new(1),
        parked: Mutex::new(parked_tx),
        accept_paused: AtomicBool::new(false),
        wake_tx: handle.control.wake_tx.try_clone()?,
    };
    let mut conn = Conn {
        io: Io::new(
            crate::listener::Stream::Unix(stream),
            pool.config,
            &pool.settings,
        )?,
        params: None,
        begun: None,
        served: 0,
        deadline: Instant::now(),
        lingering: false,
    };
    // Parking only means "nothing to read yet": serve again, which waits
    // (one linger period at a time) for bytes or the end.
    while let Outcome::Park = serve(&mut conn, &pool, handler, &handle) {}
    close(&pool, conn);
    Ok(())
}
