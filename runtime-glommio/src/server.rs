//! The server: N glommio executors, one per core, each pinned, all
//! accepting on the same listening socket; a task per connection, which
//! runs its requests too (one that begins while another runs, multiplexed,
//! gets a task of its own).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt;
use futures_lite::future;
use glommio::{LocalExecutorBuilder, Placement};
use simple_fastcgi_std::Listener;

use crate::conn::{self, Conn, Runner, Slot, within};
use crate::handler::Handler;
use crate::request::Request;
use crate::settings::Settings;

/// glommio's minimum locked memory per executor (its rings).
const MEMLOCK_PER_EXECUTOR: u64 = 512 * 1024;

/// Storage I/O memory glommio registers per executor; this server does no
/// storage I/O, so it asks for glommio's minimum instead of its 10 MiB.
const IO_MEMORY: usize = 64 * 1024;

/// After the shutdown timeout, how long the handlers of the connections
/// then cut get to return, before their executor stops anyway.
const CUT_GRACE: Duration = Duration::from_millis(250);
/// How often an executor frees the pooled memory it did not use since the
/// last time.
const POOL_TRIM_EVERY: Duration = Duration::from_secs(5);

/// A thread-per-core FastCGI server on glommio: the Rust form of the seed's
/// `AsyncFcgiServer`.
///
/// ```no_run
/// use simple_fastcgi_glommio::{AsyncServer, Request};
///
/// fn main() -> std::io::Result<()> {
///     // One handler per executor, made by the factory: it need not be Send.
///     let server = AsyncServer::new(|| async |req: &mut Request<'_>| {
///         req.send_response(200, "text/plain", "Hello, world!", &[], false).await
///     })?;
///     server.run() // or, inside a glommio executor: server.serve_forever().await
/// }
/// ```
pub struct AsyncServer<F> {
    inner: Arc<Inner<F>>,
}

struct Inner<F> {
    factory: F,
    /// The listening socket, until `run` takes it: the executors accept on
    /// duplicates of it, each closed as its executor begins to shut down,
    /// so new connections are then refused (or, when another process holds
    /// the socket too, wait for the next instance).
    listener: Mutex<Option<Listener>>,
    is_tcp: bool,
    settings: Settings,
    control: Arc<Control>,
}

/// A cloneable handle to a server, usable from any thread or executor.
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

struct Control {
    shutdown: Arc<AtomicBool>,
    /// `run` has begun serving (and `stopped` will be set when it returns).
    running: AtomicBool,
    stopped: AtomicBool,
    live: AtomicUsize,
    /// The listening socket's descriptor, -1 once it is closed.
    fileno: AtomicI32,
    local_addr: String,
    /// While serving, the write ends of the executors' wake-up sockets: a
    /// shutdown writes a byte to each, which wakes the executor's shutdown
    /// watcher at once (an idle executor sleeps until then, instead of
    /// looking at `shutdown` on a timer).
    wakers: Mutex<Vec<OwnedFd>>,
}

impl Control {
    /// Sets `shutdown` and wakes every executor.
    fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // The executors close their listening sockets next.
        self.fileno.store(-1, Ordering::SeqCst);
        let wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        for waker in wakers.iter() {
            // Never waits: a socket too full for the byte holds enough.
            let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
            let _ = rustix::net::send(waker, &[1], flags);
        }
    }
}

/// Asks every executor to stop when dropped during a panic.
struct StopAllOnFailure {
    control: Arc<Control>,
}

impl Drop for StopAllOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.control.begin_shutdown();
        }
    }
}

/// One executor's serving state.
struct Exec<H> {
    handler: H,
    handle: ServerHandle,
    conns: RefCell<Vec<Weak<Conn>>>,
    tasks: Cell<usize>,
    done: conn::Signal,
}

impl<F, H> AsyncServer<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler,
{
    /// A server on fd 0 (FCGI_LISTENSOCK_FILENO), Unix or TCP, as a web
    /// server or `spawn-fcgi` starts it. `factory` makes each executor's
    /// handler. Settings come from [`Settings::from_env`].
    pub fn new(factory: F) -> io::Result<AsyncServer<F>> {
        let listener = Listener::fd0()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "fd 0 is not a listening socket: start this under a web server or spawn-fcgi, give an address, or use \
                 simple-fastcgi-std to run as CGI",
            )
        })?;
        AsyncServer::from_listener(listener, factory)
    }

    /// A server listening on `addr`: `host:port` for TCP, a path (or
    /// `unix:path`) for a Unix socket.
    pub fn bind(addr: &str, factory: F) -> io::Result<AsyncServer<F>> {
        AsyncServer::from_listener(Listener::bind(addr)?, factory)
    }

    /// A server on a listening socket given as a file descriptor.
    pub fn from_fd(fd: OwnedFd, factory: F) -> io::Result<AsyncServer<F>> {
        AsyncServer::from_listener(Listener::from_fd(fd)?, factory)
    }

    /// A server on a listener the caller has.
    pub fn from_listener(listener: impl Into<Listener>, factory: F) -> io::Result<AsyncServer<F>> {
        let listener = listener.into();
        let control = Arc::new(Control {
            shutdown: Arc::new(AtomicBool::new(false)),
            running: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            fileno: AtomicI32::new(listener.as_fd().as_raw_fd()),
            local_addr: listener.local_addr(),
            wakers: Mutex::new(Vec::new()),
        });
        Ok(AsyncServer {
            inner: Arc::new(Inner {
                factory,
                is_tcp: listener.is_tcp(),
                listener: Mutex::new(Some(listener)),
                settings: Settings::from_env()?,
                control,
            }),
        })
    }

    /// Replaces the settings (before serving).
    pub fn with_settings(self, settings: Settings) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.settings = settings;
                AsyncServer {
                    inner: Arc::new(inner),
                }
            }
            // Already serving: the settings in use stay.
            Err(inner) => AsyncServer { inner },
        }
    }

    /// The settings it serves with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The listening socket's file descriptor; -1 once the socket is
    /// closed: as a shutdown begins, when serving failed, or when the
    /// server is dropped (its handles live on).
    pub fn fileno(&self) -> RawFd {
        self.inner.control.fileno.load(Ordering::SeqCst)
    }

    /// A handle to shut the server down from any thread or executor.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            control: Arc::clone(&self.inner.control),
        }
    }

    /// Serves until shut down, on [`Settings::executors`] executors of its
    /// own, blocking the calling thread. Then stops accepting, lets
    /// in-flight requests finish (at most [`Settings::shutdown_timeout`],
    /// after which the connections still open are shut down), and returns
    /// `Ok`. The listening socket is closed as the shutdown
    /// begins, so new connections are refused at once rather than left
    /// waiting; a server serves once.
    ///
    /// Fails at once, with an error that says why, when io_uring is not
    /// available or the locked-memory limit is too low for the executors;
    /// the std runtime (`simple-fastcgi-std`) serves without either.
    pub fn run(&self) -> io::Result<()> {
        self.inner.run()
    }

    /// [`AsyncServer::run`] from inside a glommio executor: the executors
    /// are started on threads of their own, and this future completes when
    /// they stop.
    pub async fn serve_forever(&self) -> io::Result<()> {
        let inner = Arc::clone(&self.inner);
        glommio::executor()
            .spawn_blocking(move || inner.run())
            .await
    }

    /// Asks the server to stop and waits until it has (at once when it is
    /// not serving).
    pub async fn shutdown(&self) {
        let handle = self.handle();
        handle.shutdown();
        while handle.control.running.load(Ordering::SeqCst)
            && !handle.control.stopped.load(Ordering::SeqCst)
        {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl<F, H> Inner<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: Handler,
{
    fn run(self: &Arc<Self>) -> io::Result<()> {
        let executors = self.settings.executors.max(1);
        check_environment(executors)?;
        // glommio's accept sets O_NONBLOCK on the shared socket and restores
        // the old flags afterwards; with executors racing, a restore could
        // leave it blocking and park a thread in accept(2). Non-blocking from
        // the start, every restore keeps it so.
        let mut listener = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| io::Error::other("this server has already served"))?;
        // Whatever happens from here, the socket is closed when this
        // returns (the guard goes first, so the number is never stale).
        let _closed = Closed(&self.control.fileno);
        listener.begin_serving();
        listener.set_nonblocking(true)?;
        // Every executor accepts on a duplicate of its own; the last one
        // also holds the listener itself (which removes a Unix socket file
        // it created when dropped) and lets go of it with its duplicate as
        // the shutdown begins.
        let fds = (0..executors)
            .map(|_| listener.as_fd().try_clone_to_owned())
            .collect::<io::Result<Vec<OwnedFd>>>()?;
        let mut owner = Some(listener);
        // A wake-up socket pair per executor: the executor waits on one end,
        // shutdowns (and signals) write to the other.
        let (wake_ends, wakers) = socket_pairs(executors)?;
        // And a tick socket pair each, for the executors' sweeps; the
        // ticker stops when `run` returns, after the executors.
        let (tick_ends, tickers) = socket_pairs(executors)?;
        let _ticker = Ticker::start(tickers, sweep_every(&self.settings))?;
        let _signals = match wakers.first() {
            Some(waker) if self.settings.handle_signals => {
                Some(SignalGuard::install(&self.control.shutdown, waker)?)
            }
            _ => None,
        };
        // From here a shutdown wakes the executors; one asked for before
        // is seen by each executor's watcher as it starts.
        *self
            .control
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = wakers;
        let cpus = allowed_cpus();
        let mut joins = Vec::new();
        self.control.running.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        let ends = wake_ends.into_iter().zip(tick_ends);
        for (n, (fd, (wake, tick))) in fds.into_iter().zip(ends).enumerate() {
            let placement = if executors <= cpus.len() {
                Placement::Fixed(cpus[n])
            } else {
                Placement::Unbound
            };
            let owner = if n + 1 == executors {
                owner.take()
            } else {
                None
            };
            let inner = Arc::clone(self);
            let mut builder = LocalExecutorBuilder::new(placement)
                .name(&format!("fcgi-exec-{n}"))
                .io_memory(IO_MEMORY);
            if !self.settings.spin_before_park.is_zero() {
                builder = builder.spin_before_park(self.settings.spin_before_park);
            }
            let serve = move || async move { inner.serve_executor(fd, owner, wake, tick).await };
            match builder.spawn(serve) {
                Ok(join) => joins.push(join),
                Err(error) => {
                    // The executors already running stop again (and the
                    // listener is dropped with the rest of them).
                    result = Err(io::Error::other(format!(
                        "cannot start executor {n}: {error}"
                    )));
                    self.control.begin_shutdown();
                    break;
                }
            }
        }
        drop(owner);
        for join in joins {
            match join.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => result = Err(error),
                Err(error) => {
                    result = Err(io::Error::other(format!("an executor failed: {error}")))
                }
            }
        }
        self.control
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.control.stopped.store(true, Ordering::SeqCst);
        result
    }

    /// One executor: accept, spawn connection tasks, drain on shutdown.
    async fn serve_executor(
        self: Arc<Self>,
        fd: OwnedFd,
        owner: Option<Listener>,
        wake: OwnedFd,
        tick: OwnedFd,
    ) -> io::Result<()> {
        // An executor that fails stops the others too: a server half up
        // (and, when this one owned the listener, with its socket file
        // gone) would be worse than one that stops and says why.
        let _stop_all = StopAllOnFailure {
            control: Arc::clone(&self.control),
        };
        // glommio's accept toggles O_NONBLOCK on the socket around every
        // accept(2), three fcntl calls, and that flag is shared with the
        // other executors' duplicates. So connections already waiting are
        // taken here directly (the socket is non-blocking from the start),
        // and glommio is asked only to wait for the next one.
        let waiting = fd.try_clone()?;
        // SAFETY: `waiting` is this executor's own duplicate of the listening
        // socket; glommio takes ownership of it and closes it on drop.
        // glommio's TCP listener accepts on Unix sockets just as well (it
        // calls accept(2)); it has no way to adopt a Unix listener itself.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(waiting.into_raw_fd()) };
        let settings = Rc::new(self.settings.clone());
        let exec = Rc::new(Exec {
            handler: (self.factory)(),
            handle: ServerHandle {
                control: Arc::clone(&self.control),
            },
            conns: RefCell::new(Vec::new()),
            tasks: Cell::new(0),
            done: conn::Signal::default(),
        });
        let is_tcp = self.is_tcp;
        // The executor's socket ring, made here: only the thread that makes
        // it may submit to it.
        let ring = if settings.socket_ring {
            match crate::ring::SocketRing::new(settings.socket_ring_buffers) {
                Ok(ring) => {
                    let driver = glommio::spawn_local(Rc::clone(&ring).drive());
                    Some((ring, driver))
                }
                Err(error) => {
                    eprintln!(
                        "simple-fastcgi: no socket ring on this executor ({error}); reading and writing sockets directly"
                    );
                    None
                }
            }
        } else {
            None
        };
        let (ring, driver) = ring.unzip();
        let pools = Rc::new(conn::Pools::new(settings.spare_buffers, ring));
        // Timeouts: one sweep over this executor's connections on every
        // tick of the ticker, instead of a timer on every read. The same
        // task trims the memory pools every POOL_TRIM_EVERY.
        // SAFETY: `tick` is this executor's own end of its tick socket pair;
        // glommio takes ownership of it and closes it on drop.
        let mut tick = unsafe { glommio::net::TcpStream::from_raw_fd(tick.into_raw_fd()) };
        let sweeper = {
            let exec = Rc::clone(&exec);
            let pools = Rc::clone(&pools);
            glommio::spawn_local(async move {
                let mut next_trim = std::time::Instant::now() + POOL_TRIM_EVERY;
                // Ticks that came while a sweep ran are taken as one.
                let mut ticks = [0u8; 64];
                loop {
                    match futures_lite::AsyncReadExt::read(&mut tick, &mut ticks).await {
                        // The ticker stops only after the executors.
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(error) => {
                            eprintln!(
                                "simple-fastcgi: the sweeper stopped ({error}): read and idle timeouts no longer end connections on this executor"
                            );
                            break;
                        }
                    }
                    let now = std::time::Instant::now();
                    let mut conns = exec.conns.borrow_mut();
                    conns.retain(|c| c.strong_count() > 0);
                    for conn in conns.iter().filter_map(Weak::upgrade) {
                        conn.check_deadline(now);
                    }
                    if now >= next_trim {
                        pools.trim();
                        next_trim = now + POOL_TRIM_EVERY;
                    }
                }
            })
        };
        // One task watches for shutdown, so waiting for a connection does
        // not set a timer each time. It sleeps on the wake-up socket: only a
        // shutdown writes to it (and its write end closes only after this
        // executor has stopped), so any outcome of the read means stop.
        // SAFETY: `wake` is this executor's own end of its wake-up socket
        // pair; glommio takes ownership of it and closes it on drop.
        let mut wake = unsafe { glommio::net::TcpStream::from_raw_fd(wake.into_raw_fd()) };
        let stop = Rc::new(conn::Signal::default());
        let watcher = {
            let stop = Rc::clone(&stop);
            let control = Arc::clone(&self.control);
            glommio::spawn_local(async move {
                if !control.shutdown.load(Ordering::SeqCst) {
                    let mut byte = [0u8; 1];
                    let _ = futures_lite::AsyncReadExt::read(&mut wake, &mut byte).await;
                    // A signal wakes only the first executor (and its byte
                    // may come before its flag is set): this sets the flag
                    // and wakes the others.
                    control.begin_shutdown();
                }
                stop.notify();
            })
        };
        loop {
            if self.control.shutdown.load(Ordering::SeqCst) {
                break;
            }
            let accepted = match accept_now(fd.as_fd()) {
                Some(accepted) => accepted,
                None => {
                    let accepted =
                        future::or(async { Some(listener.shared_accept().await) }, async {
                            stop.wait().await;
                            None
                        })
                        .await;
                    match accepted {
                        None => break,
                        Some(accepted) => accepted
                            .map(glommio::net::AcceptedTcpStream::bind_to_executor)
                            .map_err(io::Error::from),
                    }
                }
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    if error.kind() != io::ErrorKind::WouldBlock {
                        // Out of descriptors, say: try again shortly.
                        eprintln!("simple-fastcgi: accept failed: {error}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            };
            if is_tcp {
                if let (Some(allowed), Ok(peer)) = (&settings.web_server_addrs, stream.peer_addr())
                {
                    if !allowed.allows(peer.ip()) {
                        eprintln!(
                            "simple-fastcgi: refused a connection from {}: not in FCGI_WEB_SERVER_ADDRS",
                            peer.ip()
                        );
                        continue;
                    }
                }
            }
            // Counted in one step with the check, so executors accepting at
            // once cannot both take the last place.
            let admitted = self
                .control
                .live
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < settings.max_conns).then_some(n + 1)
                })
                .is_ok();
            if !admitted {
                // Over the limit: a clean close, not a hang.
                drop(stream);
                continue;
            }
            let conn = Rc::new(Conn::new(
                stream,
                is_tcp,
                Rc::clone(&settings),
                Rc::clone(&pools),
            ));
            {
                let mut conns = exec.conns.borrow_mut();
                conns.retain(|c| c.strong_count() > 0);
                conns.push(Rc::downgrade(&conn));
            }
            exec.tasks.set(exec.tasks.get() + 1);
            let task_exec = Rc::clone(&exec);
            let control = Arc::clone(&self.control);
            glommio::spawn_local(async move {
                conn::serve(conn, &task_exec).await;
                control.live.fetch_sub(1, Ordering::SeqCst);
                task_exec.tasks.set(task_exec.tasks.get() - 1);
                task_exec.done.notify();
            })
            .detach();
        }
        // No more accepting here: this executor's duplicates are closed.
        drop((listener, fd, owner, watcher));
        // Draining: idle connections close, in-flight requests finish.
        // Every connection closes once its requests are done (idle ones at
        // once).
        for conn in exec.conns.borrow().iter().filter_map(Weak::upgrade) {
            conn.state.borrow_mut().closing = true;
            conn.wake_reader.notify();
        }
        let drained = within(self.settings.shutdown_timeout, async {
            while exec.tasks.get() > 0 {
                exec.done.wait().await;
            }
        })
        .await;
        if drained.is_none() {
            eprintln!(
                "simple-fastcgi: shutdown timeout: {} connection(s) cut",
                exec.tasks.get()
            );
            // Their web servers see them end now, not when the process
            // does; their handlers, whose reads and writes now fail, get a
            // moment to return, so that their connections close and free
            // what they hold.
            for conn in exec.conns.borrow().iter().filter_map(Weak::upgrade) {
                conn.cut();
            }
            within(CUT_GRACE, async {
                while exec.tasks.get() > 0 {
                    exec.done.wait().await;
                }
            })
            .await;
        }
        drop(sweeper);
        // The socket ring's driver ends last, after the connections' reads
        // and writes; the ring goes with the last connection.
        if let (Some(ring), Some(driver)) = (&pools.ring, driver) {
            ring.stop();
            driver.await;
        }
        Ok(())
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

impl<F> Drop for Inner<F> {
    fn drop(&mut self) {
        // The listening socket, if never served on, goes with the server
        // (after this runs).
        self.control.fileno.store(-1, Ordering::SeqCst);
    }
}

/// How often each executor sweeps its connections for passed deadlines:
/// often enough to end a read or idle timeout within a quarter of it.
fn sweep_every(settings: &Settings) -> Duration {
    (settings.read_timeout.min(settings.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// `count` connected Unix socket pairs, both ends non-blocking: the first
/// ends, then the second ends.
fn socket_pairs(count: usize) -> io::Result<(Vec<OwnedFd>, Vec<OwnedFd>)> {
    let mut firsts = Vec::with_capacity(count);
    let mut seconds = Vec::with_capacity(count);
    for _ in 0..count {
        let (first, second) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )?;
        firsts.push(first);
        seconds.push(second);
    }
    Ok((firsts, seconds))
}

/// The executors' clock for their sweeps: a thread that writes a byte to
/// every executor's tick socket at a fixed interval, until dropped.
///
/// Not a glommio timer, because glommio 0.9 keeps its timers in a
/// `BTreeMap` that it splits on every turn of its loop while any timer is
/// pending, and each split allocates a node: a sweeper asleep on a glommio
/// timer cost five heap allocations per request with one client (12
/// instead of 7) and most of the few left under load. A read waiting on a
/// socket costs nothing per turn.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking `ends` every `every`.
    fn start(ends: Vec<OwnedFd>, every: Duration) -> io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("fcgi-ticker".to_string())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    loop {
                        // Wakes early only when dropped (or spuriously,
                        // which is one early sweep).
                        std::thread::park_timeout(every);
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        for end in &ends {
                            // Never waits: a socket too full for the byte
                            // already holds ticks unread. A closed peer (an
                            // executor that stopped) is not an error here.
                            let flags =
                                rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
                            let _ = rustix::net::send(end, &[0], flags);
                        }
                    }
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl<H: Handler> Runner for Rc<Exec<H>> {
    async fn run(&self, conn: &Conn, slot: &Rc<Slot>) {
        run_request(self, conn, slot).await;
    }

    fn spawn(&self, conn: Rc<Conn>, slot: Rc<Slot>) {
        let exec = Rc::clone(self);
        glommio::spawn_local(async move { run_request(&exec, &conn, &slot).await }).detach();
    }
}

impl ServerHandle {
    /// Asks the server to stop: every executor stops accepting, in-flight
    /// requests finish, and `run` returns. Safe from any thread, any number
    /// of times.
    pub fn shutdown(&self) {
        self.control.begin_shutdown();
    }

    /// Whether a shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.control.shutdown.load(Ordering::SeqCst)
    }

    /// The listening socket's file descriptor; -1 once the socket is
    /// closed: as a shutdown begins, when serving failed, or when the
    /// server is dropped.
    pub fn fileno(&self) -> RawFd {
        self.control.fileno.load(Ordering::SeqCst)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> &str {
        &self.control.local_addr
    }
}

/// Accepts a connection that is already waiting, without glommio: `None`
/// when none is. `listener` is non-blocking.
fn accept_now(listener: BorrowedFd<'_>) -> Option<io::Result<glommio::net::TcpStream>> {
    loop {
        return match rustix::net::accept_with(listener, rustix::net::SocketFlags::CLOEXEC) {
            // SAFETY: `conn` was just accepted and nothing else owns it; the
            // stream takes it over and closes it when dropped.
            Ok(conn) => Some(Ok(unsafe {
                glommio::net::TcpStream::from_raw_fd(conn.into_raw_fd())
            })),
            // Interrupted, or the peer gave up before it was accepted: the
            // next one, if any.
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(rustix::io::Errno::AGAIN) => None,
            Err(error) => Some(Err(error.into())),
        };
    }
}

/// Runs one request whose params are complete (or that was aborted first).
async fn run_request<H: Handler>(exec: &Exec<H>, conn: &Conn, slot: &Rc<Slot>) {
    let params = slot.params.borrow_mut().take();
    let output = slot.output.borrow_mut().take();
    let (Some(params), Some(output)) = (params, output) else {
        return;
    };
    let mut req = Request::new(conn, slot, &exec.handle, params, output);
    let status = if !slot.params_done.get() {
        // Aborted before it could start.
        0
    } else if let Some(error) = slot.params_error.get() {
        eprintln!(
            "simple-fastcgi: request {} refused: {error}",
            slot.request_id.get()
        );
        let _ = req
            .send_response(error.http_status(), "", (), &[], false)
            .await;
        1
    } else {
        run_handler(&exec.handler, &mut req).await
    };
    if let Err(error) = req.finish(status).await {
        if !matches!(
            error.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            eprintln!(
                "simple-fastcgi: ending request {}: {error}",
                slot.request_id.get()
            );
        }
    }
}

/// Runs the handler, turning an error or a panic into a 500 (when nothing
/// was sent yet) and a non-zero app status.
async fn run_handler<H: Handler>(handler: &H, req: &mut Request<'_>) -> u32 {
    let outcome = AssertUnwindSafe(handler.handle(req)).catch_unwind().await;
    let (status, what) = match outcome {
        Ok(Ok(())) => return 0,
        // The web server gave up on the request (its client went away):
        // the handler's failure is the expected outcome, not worth a line.
        Ok(Err(_)) if req.aborted() => return 1,
        Ok(Err(error)) => (1, format!("failed: {error}")),
        Err(panic) => (101, format!("panicked: {}", panic_message(&*panic))),
    };
    let uri = req.param("REQUEST_URI").unwrap_or("").to_string();
    eprintln!(
        "simple-fastcgi: the handler for request {}{}{uri} {what}",
        req.request_id(),
        if uri.is_empty() { "" } else { " " }
    );
    if !req.response_sent() && !req.aborted() {
        req.discard_unsent();
        let _ = req.send_response(500, "", (), &[], false).await;
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

/// Checks that this machine can run `executors` glommio executors: io_uring
/// is available, and the locked-memory limit covers them (the soft limit is
/// raised when the hard one allows). [`AsyncServer::run`] does this first;
/// call it to choose a runtime before building a server. The error says what
/// is missing and how to fix it.
pub fn check_environment(executors: usize) -> io::Result<()> {
    check_io_uring()?;
    ensure_memlock(executors.max(1))
}

/// Fails with a clear error when io_uring cannot be used here, instead of
/// letting glommio panic in every executor.
fn check_io_uring() -> io::Result<()> {
    // On a thread of its own: tearing a ring down queues kernel work on the
    // thread that made it, which interrupts that thread's next blocking
    // socket call with EINTR (when it has a timeout). The caller's thread
    // must not inherit that.
    let probe = std::thread::spawn(|| {
        let mut params = rustix::io_uring::io_uring_params::default();
        // SAFETY: io_uring_setup only creates a ring; nothing is mapped into
        // this process, and the returned descriptor is closed at once.
        unsafe { rustix::io_uring::io_uring_setup(1, &mut params) }.map(drop)
    })
    .join()
    .map_err(|_| io::Error::other("the io_uring probe panicked"))?;
    match probe {
        Ok(()) => Ok(()),
        Err(error) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring is not available ({error}): the kernel is older than 5.8, io_uring is disabled \
                 (sysctl kernel.io_uring_disabled) or a seccomp filter (a container runtime) blocks it; \
                 the simple-fastcgi-std runtime serves without it"
            ),
        )),
    }
}

/// Makes sure the locked-memory limit covers every executor's rings:
/// raises the soft limit when the hard one allows, else fails clearly.
fn ensure_memlock(executors: usize) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let need = MEMLOCK_PER_EXECUTOR.saturating_mul(executors as u64);
    let limit = getrlimit(Resource::Memlock);
    if limit.current.is_none_or(|current| current >= need) {
        return Ok(());
    }
    let raised = Rlimit {
        current: Some(limit.maximum.map_or(need, |max| max.min(need))),
        maximum: limit.maximum,
    };
    let _ = setrlimit(Resource::Memlock, raised);
    let now = getrlimit(Resource::Memlock).current;
    if now.is_none_or(|current| current >= need) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "RLIMIT_MEMLOCK is {} KiB; glommio needs {} KiB per executor ({} KiB for {executors}). Raise it \
             (`ulimit -l {}` as root, or memlock in /etc/security/limits.conf), use fewer executors, or the \
             simple-fastcgi-std runtime",
            now.unwrap_or(0) / 1024,
            MEMLOCK_PER_EXECUTOR / 1024,
            need / 1024,
            need / 1024
        ),
    ))
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// SIGTERM, SIGINT and SIGUSR1 handlers for the time the server runs.
struct SignalGuard {
    ids: Vec<signal_hook::SigId>,
}

impl SignalGuard {
    /// Each signal sets `shutdown`, then writes a byte to `waker` (the first
    /// executor's wake-up socket; that executor wakes the others).
    fn install(shutdown: &Arc<AtomicBool>, waker: &OwnedFd) -> io::Result<SignalGuard> {
        let mut guard = SignalGuard { ids: Vec::new() };
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGUSR1,
        ] {
            guard
                .ids
                .push(signal_hook::flag::register(signal, Arc::clone(shutdown))?);
            guard.ids.push(signal_hook::low_level::pipe::register(
                signal,
                waker.try_clone()?,
            )?);
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
