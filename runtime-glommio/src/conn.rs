//! One connection on one executor.
//!
//! A reader task owns the reading side: it reads into 64 KiB blocks, feeds
//! the core, copies params into each request's arena, and hands body chunks
//! to requests as ranges of the block they arrived in (no copy: the handler
//! copies once, from the block into its own buffer). A request runs inside
//! the connection's task, beside the reader (a multiplexed request that
//! begins while another runs gets a task of its own), and writes its own
//! output, whole records at a time, under a per-connection write lock.
//! Every protocol rule is the core's.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future::{self, poll_fn};
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use simple_fastcgi_core::{Config, Connection, Event, Output, Params, ParamsError, Role};

use crate::settings::{MAX_REQS_PER_CONN, Settings};

/// Size of one read block.
const BLOCK: usize = 64 * 1024;

/// A one-shot wake-up for one waiting task (single-threaded).
#[derive(Default)]
pub(crate) struct Signal {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Wakes the waiter, or lets its next `wait` return at once.
    pub(crate) fn notify(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits for the next `notify`.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.fired.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// One read buffer; shared by the body chunks that point into it. Its
/// capacity is [`BLOCK`], but only the part reads have needed so far is
/// initialized (zero-filled once, then reused): a block that only ever
/// holds small requests faults in a page or two, even when it is reused
/// from the pool (reallocating a zeroed block would write all of it).
pub(crate) struct Block {
    bytes: Vec<u8>,
}

/// Free room a read gets at the least, initialized when needed.
const MIN_ROOM: usize = 4096;

impl Block {
    /// The room after `end` to read into: what is initialized already, grown
    /// (at least doubling, up to [`BLOCK`]) when less than `want` is left.
    /// `want` is [`MIN_ROOM`], or more after a read that filled its room.
    fn room_after(&mut self, end: usize, want: usize) -> &mut [u8] {
        let len = self.bytes.len();
        if len.saturating_sub(end) < want && len < BLOCK {
            let grown = (end + want).max(2 * len).min(BLOCK);
            self.bytes.resize(grown, 0);
        }
        let from = end.min(self.bytes.len());
        &mut self.bytes[from..]
    }
}

/// A piece of a request body: a range of a block.
pub(crate) struct Chunk {
    block: Rc<Block>,
    start: usize,
    end: usize,
}

/// Memory kept by an executor for its next connections and requests:
/// faulting in fresh pages for every connection cost more than all the rest
/// of a connection's work. Each pool keeps at most `limit` items
/// ([`Settings::spare_buffers`]); the rest is freed. And what a pool did not
/// need between two trims (its low-water mark) is freed at the second, so
/// memory a burst left behind goes back within seconds.
pub(crate) struct Pools {
    limit: usize,
    blocks: RefCell<Spare<Rc<Block>>>,
    /// Where a connection that waits with no block reads its first bytes,
    /// to copy them into a block from the pool at once.
    landing: RefCell<Vec<u8>>,
    /// The block of a connection that has given its own back: empty, never
    /// read into.
    no_block: Rc<Block>,
    params: RefCell<Spare<Box<Params>>>,
    outs: RefCell<Spare<Vec<u8>>>,
    slots: RefCell<Spare<Rc<Slot>>>,
    /// The executor's socket ring ([`Settings::socket_ring`]), when it has
    /// one.
    pub(crate) ring: Option<Rc<crate::ring::SocketRing>>,
}

/// One pool: a stack of spare items, and the fewest it held since the last
/// trim.
struct Spare<T> {
    items: Vec<T>,
    low: usize,
}

impl<T> Default for Spare<T> {
    fn default() -> Self {
        Spare {
            items: Vec::new(),
            low: 0,
        }
    }
}

impl<T> Spare<T> {
    fn take(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low = self.low.min(self.items.len());
        item
    }

    /// Frees the items that sat unused since the last trim (the bottom of
    /// the stack, used least recently).
    fn trim(&mut self) {
        let unused = self.low.min(self.items.len());
        drop(self.items.drain(..unused));
        self.low = self.items.len();
    }
}

/// Keeps `item` in `pool` unless the pool is full.
fn keep<T>(pool: &RefCell<Spare<T>>, limit: usize, item: T) {
    let mut pool = pool.borrow_mut();
    if pool.items.len() < limit {
        pool.items.push(item);
    }
}

impl Pools {
    /// Empty pools that keep up to `limit` items each.
    pub(crate) fn new(limit: usize, ring: Option<Rc<crate::ring::SocketRing>>) -> Pools {
        Pools {
            ring,
            limit,
            blocks: RefCell::default(),
            landing: RefCell::new(vec![0; MIN_ROOM]),
            no_block: Rc::new(Block { bytes: Vec::new() }),
            params: RefCell::default(),
            outs: RefCell::default(),
            slots: RefCell::default(),
        }
    }

    /// Frees what each pool did not need since the last call. The
    /// executor's sweeper calls this every few seconds.
    pub(crate) fn trim(&self) {
        self.blocks.borrow_mut().trim();
        self.params.borrow_mut().trim();
        self.outs.borrow_mut().trim();
        self.slots.borrow_mut().trim();
    }

    fn block(&self) -> Rc<Block> {
        self.blocks.borrow_mut().take().unwrap_or_else(|| {
            Rc::new(Block {
                bytes: Vec::with_capacity(BLOCK),
            })
        })
    }
}

/// The connection, shared by its reader task and its request tasks.
pub(crate) struct Conn {
    stream: RefCell<TcpStream>,
    write_lock: Semaphore,
    pub(crate) state: RefCell<State>,
    /// Wakes the reader: buffer room freed, a request ended, stop asked,
    /// or its deadline passed.
    pub(crate) wake_reader: Signal,
    /// The reader waits for a handler to free a read block.
    waiting_room: Cell<bool>,
    /// When the connection times out if the web server sends nothing
    /// (`None`: not while handlers run with all their input). Checked by the
    /// executor's sweeper, so reads carry no timer of their own.
    deadline: Cell<Option<Instant>>,
    /// The sweeper found the deadline passed.
    timed_out: Cell<bool>,
    /// Wakes the closing reader when the last request ended.
    idle: Signal,
    /// The request the connection's own task runs, or is about to, until
    /// it ends. Requests run there one after another, without a task of
    /// their own (which glommio allocates); only one that begins while
    /// another runs (multiplexed) gets its own task.
    inline: RefCell<Option<Rc<Slot>>>,
    /// Wakes the connection's request runner: a request to run, or the
    /// reader is done.
    wake_runner: Signal,
    /// The reader ended and so did every request: the runner stops.
    reader_done: Cell<bool>,
    pools: Rc<Pools>,
    settings: Rc<Settings>,
    /// With a socket ring: the reader's `recv` while it is out (it stays
    /// out while the reader is woken for something else), and bytes of a
    /// completed one that did not fit in the reader's block (provided
    /// buffer, from, to).
    armed: Cell<Option<usize>>,
    leftover: Cell<Option<(u16, usize, usize)>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// What the reader and the requests share about the connection.
pub(crate) struct State {
    pub(crate) core: Connection<MAX_REQS_PER_CONN>,
    pub(crate) slots: Vec<Rc<Slot>>,

    served: u64,
    /// Close once no request is active (limit reached, or shutting down).
    pub(crate) closing: bool,
    /// A write failed: the web server is gone.
    broken: bool,
}

/// One active request. Slots are reused for the connection's next
/// requests, so their fields are cells.
pub(crate) struct Slot {
    pub(crate) request_id: Cell<u16>,
    pub(crate) role: Cell<Role>,
    pub(crate) keep_conn: Cell<bool>,
    pub(crate) params: RefCell<Option<Box<Params>>>,
    pub(crate) params_error: Cell<Option<ParamsError>>,
    /// The PARAMS stream ended.
    pub(crate) params_done: Cell<bool>,
    /// The request was started (in the connection's task or its own).
    spawned: Cell<bool>,
    pub(crate) output: RefCell<Option<Output>>,
    pub(crate) input: RefCell<Input>,
    /// Wakes the request's task: input arrived, ended, aborted, or gone.
    pub(crate) signal: Signal,
    /// Wakes a task waiting for the abort.
    pub(crate) abort_signal: Signal,
}

/// A request's input as the reader delivered it.
#[derive(Default)]
pub(crate) struct Input {
    stdin: VecDeque<Chunk>,
    data: VecDeque<Chunk>,
    pub(crate) stdin_done: bool,
    pub(crate) data_done: bool,
    pub(crate) aborted: bool,
    /// The connection ended: why reads fail now.
    pub(crate) gone: Option<io::ErrorKind>,
}

/// Which input stream a handler reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stdin,
    Data,
}

impl Input {
    /// Empties the input for a new request, keeping the queues' memory.
    fn reset(&mut self) {
        self.stdin.clear();
        self.data.clear();
        self.stdin_done = false;
        self.data_done = false;
        self.aborted = false;
        self.gone = None;
    }
}

impl Slot {
    fn new() -> Slot {
        Slot {
            request_id: Cell::new(0),
            role: Cell::new(Role::Responder),
            keep_conn: Cell::new(false),
            params: RefCell::new(None),
            params_error: Cell::new(None),
            params_done: Cell::new(false),
            spawned: Cell::new(false),
            output: RefCell::new(None),
            input: RefCell::new(Input::default()),
            signal: Signal::default(),
            abort_signal: Signal::default(),
        }
    }

    /// Sets the slot up for a new request.
    fn begin(
        &self,
        request_id: u16,
        role: Role,
        keep_conn: bool,
        params: Box<Params>,
        output: Output,
    ) {
        self.request_id.set(request_id);
        self.role.set(role);
        self.keep_conn.set(keep_conn);
        *self.params.borrow_mut() = Some(params);
        self.params_error.set(None);
        self.params_done.set(false);
        self.spawned.set(false);
        *self.output.borrow_mut() = Some(output);
        self.input.borrow_mut().reset();
        self.signal.fired.set(false);
        self.abort_signal.fired.set(false);
    }

    /// Copies the next bytes of the `kind` stream into `buf`; `None` when
    /// none are buffered.
    pub(crate) fn take_input(&self, kind: Kind, buf: &mut [u8], conn: &Conn) -> Option<usize> {
        let mut input = self.input.borrow_mut();
        let queue = match kind {
            Kind::Stdin => &mut input.stdin,
            Kind::Data => &mut input.data,
        };
        let chunk = queue.front_mut()?;
        let n = (chunk.end - chunk.start).min(buf.len());
        buf[..n].copy_from_slice(&chunk.block.bytes[chunk.start..chunk.start + n]);
        chunk.start += n;
        if chunk.start == chunk.end {
            queue.pop_front();
            // The block may be free for the reader again.
            if conn.waiting_room.get() {
                conn.wake_reader.notify();
            }
        }
        Some(n)
    }

    /// Drops the buffered `kind` input.
    pub(crate) fn drop_input(&self, kind: Kind, conn: &Conn) {
        let mut input = self.input.borrow_mut();
        match kind {
            Kind::Stdin => input.stdin.clear(),
            Kind::Data => input.data.clear(),
        }
        conn.wake_reader.notify();
    }
}

impl Conn {
    /// A connection on `stream` (`tcp`: a TCP socket, not a Unix one).
    pub(crate) fn new(
        stream: TcpStream,
        tcp: bool,
        settings: Rc<Settings>,
        pools: Rc<Pools>,
    ) -> Conn {
        let config = Config {
            max_conns: u32::try_from(settings.max_conns).unwrap_or(u32::MAX),
            max_reqs: u32::try_from(settings.max_conns.saturating_mul(if settings.multiplex {
                settings.max_reqs_per_conn.min(MAX_REQS_PER_CONN)
            } else {
                1
            }))
            .unwrap_or(u32::MAX),
            multiplex: settings.multiplex,
            max_reqs_per_conn: u16::try_from(settings.max_reqs_per_conn).unwrap_or(u16::MAX),
        };
        let _ = stream.set_write_timeout(Some(settings.write_timeout));
        if tcp {
            let _ = stream.set_nodelay(true);
        }
        Conn {
            stream: RefCell::new(stream),
            write_lock: Semaphore::new(1),
            state: RefCell::new(State {
                core: Connection::new(config),
                slots: Vec::new(),

                served: 0,
                closing: false,
                broken: false,
            }),
            wake_reader: Signal::default(),
            waiting_room: Cell::new(false),
            deadline: Cell::new(Some(Instant::now() + settings.idle_timeout)),
            timed_out: Cell::new(false),
            idle: Signal::default(),
            inline: RefCell::new(None),
            wake_runner: Signal::default(),
            reader_done: Cell::new(false),
            pools,
            settings,
            armed: Cell::new(None),
            leftover: Cell::new(None),
        }
    }

    /// Writes `slices` whole, under the write lock, so records of concurrent
    /// requests never interleave.
    pub(crate) async fn write_locked(&self, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        if self.state.borrow().broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the web server is gone",
            ));
        }
        let _permit = self
            .write_lock
            .acquire_permit(1)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        if let Err(error) = self.write_all(slices).await {
            self.state.borrow_mut().broken = true;
            return Err(error);
        }
        Ok(())
    }

    /// Writes `slices` whole, in order: with one `sendmsg` of them all while
    /// the socket has room, and through glommio, which waits for room (at
    /// most the write timeout), when it has none.
    async fn write_all(&self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        // Leading empty slices go, here and after every write: the first
        // one left always has bytes.
        IoSlice::advance_slices(&mut slices, 0);
        while let Some(first) = slices.first() {
            let ring = self.pools.ring.as_ref().filter(|_| {
                slices.iter().map(|s| s.len()).sum::<usize>() <= crate::ring::BUFFER_LEN
            });
            let tried = match ring {
                Some(ring) => self.ring_write(ring, slices).await,
                None => self.try_write(slices),
            };
            let written = match tried {
                Some(written) => written?,
                None => {
                    poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, first))
                        .await?
                }
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }

    /// Writes what the socket takes now of `slices` through the executor's
    /// socket ring: `None` when it has no room.
    async fn ring_write(
        &self,
        ring: &Rc<crate::ring::SocketRing>,
        slices: &[IoSlice<'_>],
    ) -> Option<io::Result<usize>> {
        let fd = self.stream.borrow().as_raw_fd();
        let id = ring.send(fd, slices);
        let guard = Abandon {
            ring,
            id: Some(id),
            conn: self,
        };
        let (result, _) = ring.wait(id).await;
        std::mem::forget(guard);
        match usize::try_from(result) {
            Ok(n) => Some(Ok(n)),
            Err(_) if result == -rustix::io::Errno::AGAIN.raw_os_error() => None,
            Err(_) => Some(Err(io::Error::from_raw_os_error(-result))),
        }
    }

    /// Gives up the reader's `recv` on the socket ring, and its leftover
    /// bytes: before the lingering close reads through glommio, and when
    /// the connection goes.
    fn disarm(&self) {
        if let Some(ring) = &self.pools.ring {
            if let Some(id) = self.armed.take() {
                // A recv that completed meanwhile: its bytes go, as
                // everything the connection would still read does.
                let _ = ring.abandon(id);
            }
            if let Some((buffer, _, _)) = self.leftover.take() {
                ring.give_back(buffer);
            }
        }
    }

    /// Waits for bytes through the executor's socket ring (or for the
    /// reader's wake-up), and copies them after `end` in `current`; returns
    /// what woke it and the room the bytes had. Bytes that do not fit stay
    /// for the next call, which takes them before asking for more. The
    /// connection's multishot `recv` stays armed from one call to the next.
    async fn ring_read(
        &self,
        ring: &crate::ring::SocketRing,
        current: &mut Rc<Block>,
        end: usize,
        want: usize,
    ) -> io::Result<(Woken, usize)> {
        if let Some((buffer, from, to)) = self.leftover.take() {
            return self.take_received(ring, (buffer, from, to), current, end, want);
        }
        loop {
            let id = match self.armed.get() {
                Some(id) => id,
                None => {
                    let id = ring.recv(self.stream.borrow().as_raw_fd());
                    self.armed.set(Some(id));
                    id
                }
            };
            if end == 0 {
                self.lend_block(current);
            }
            let outcome = future::or(async { Some(ring.wait(id).await) }, async {
                self.wake_reader.wait().await;
                None
            })
            .await;
            if end == 0 {
                *current = self.pools.block();
            }
            let Some((result, flags)) = outcome else {
                return Ok((Woken::Reader, MIN_ROOM));
            };
            if !io_uring::cqueue::more(flags) {
                self.armed.set(None);
            }
            let buffer = io_uring::cqueue::buffer_select(flags);
            if let Ok(len @ 1..) = usize::try_from(result) {
                let Some(buffer) = buffer else {
                    return Err(io::Error::other("a recv completed without a buffer"));
                };
                return self.take_received(ring, (buffer, 0, len), current, end, want);
            }
            // No bytes: any buffer goes straight back.
            if let Some(buffer) = buffer {
                ring.give_back(buffer);
            }
            if result == 0 {
                return Ok((Woken::Read(Ok(0)), MIN_ROOM));
            }
            if result == -rustix::io::Errno::CANCELED.raw_os_error() {
                // Cancelled while its bytes waited for this reader (the
                // ring's bound on them): armed again.
                continue;
            }
            if result != -rustix::io::Errno::NOBUFS.raw_os_error() {
                return Ok((
                    Woken::Read(Err(io::Error::from_raw_os_error(-result))),
                    MIN_ROOM,
                ));
            }
            // No provided buffer was free: this read goes through glommio,
            // holding no block while it waits.
            if end == 0 {
                return Ok((self.wait_without_block(current).await, MIN_ROOM));
            }
            let buf = room_in(current, end, want)?;
            let room = buf.len();
            let woken = future::or(async { Woken::Read(self.read(buf).await) }, async {
                self.wake_reader.wait().await;
                Woken::Reader
            })
            .await;
            return Ok((woken, room));
        }
    }

    /// Copies bytes `from..to` of a provided buffer after `end` in
    /// `current`; what does not fit stays for the next read, and a buffer
    /// emptied goes back to the kernel. Returns the read and its room.
    fn take_received(
        &self,
        ring: &crate::ring::SocketRing,
        (buffer, from, to): (u16, usize, usize),
        current: &mut Rc<Block>,
        end: usize,
        want: usize,
    ) -> io::Result<(Woken, usize)> {
        let buf = match room_in(current, end, want) {
            Ok(buf) => buf,
            Err(error) => {
                ring.give_back(buffer);
                return Err(error);
            }
        };
        let room = buf.len();
        let n = ring.copy_out(buffer, from, to, buf);
        if from + n < to {
            self.leftover.set(Some((buffer, from + n, to)));
        } else {
            ring.give_back(buffer);
        }
        Ok((Woken::Read(Ok(n)), room))
    }

    /// Writes what the socket takes now of `slices`, with one send and
    /// without glommio: `None` when it has no room.
    fn try_write(&self, slices: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        self.without_waiting(|fd| match slices {
            // One slice (a small response, the usual case) takes a plain
            // send, which costs less in the kernel than a sendmsg.
            [slice] => rustix::net::send(fd, slice, flags),
            _ => rustix::net::sendmsg(
                fd,
                slices,
                &mut rustix::net::SendAncillaryBuffer::default(),
                flags,
            ),
        })
    }

    /// Runs the non-blocking socket call `call` on the connection's socket
    /// directly, not through glommio: again when interrupted, `None` when
    /// the socket is not ready.
    fn without_waiting(
        &self,
        mut call: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<usize>,
    ) -> Option<io::Result<usize>> {
        let stream = self.stream.borrow();
        // SAFETY: the descriptor belongs to `stream`, which stays open while
        // it is borrowed here, and the borrowed descriptor does not outlive
        // this call.
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        loop {
            return match call(fd) {
                Ok(n) => Some(Ok(n)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => None,
                Err(error) => Some(Err(error.into())),
            };
        }
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf)).await
    }

    /// Waits for bytes and reads them into the executor's landing buffer.
    /// glommio reads into the buffer of the poll that finds the socket
    /// readable, so the buffer is borrowed only during each poll.
    async fn read_landing(&self) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut landing = self.pools.landing.borrow_mut();
            Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, &mut landing)
        })
        .await
    }

    /// Waits for bytes (or the reader's wake-up) holding no read block:
    /// `current`, which keeps nothing, goes back to the pool meanwhile, so
    /// an idle connection holds none. Whatever woke it, `current` is a
    /// block again afterwards, with the bytes read at its start.
    async fn wait_without_block(&self, current: &mut Rc<Block>) -> Woken {
        self.lend_block(current);
        let woken = future::or(async { Woken::Read(self.read_landing().await) }, async {
            self.wake_reader.wait().await;
            Woken::Reader
        })
        .await;
        // No await since the read: the landing buffer still holds its bytes.
        *current = self.pools.block();
        if let Woken::Read(Ok(n)) = woken {
            // Pooled blocks are never shared.
            let Some(block) = Rc::get_mut(current) else {
                return Woken::Read(Err(io::Error::other("pooled read block shared")));
            };
            let landing = self.pools.landing.borrow();
            block.room_after(0, MIN_ROOM)[..n].copy_from_slice(&landing[..n]);
        }
        woken
    }

    /// Gives the reader's block back to the pool (it holds no bytes) and
    /// leaves the empty stand-in in its place.
    fn lend_block(&self, current: &mut Rc<Block>) {
        let idle = std::mem::replace(current, Rc::clone(&self.pools.no_block));
        keep(&self.pools.blocks, self.pools.limit, idle);
    }

    /// Reads what the socket holds without waiting and without glommio:
    /// `None` when it holds nothing now. On a busy connection the next
    /// request is usually there by the time the reader comes back to it,
    /// and reading it directly saves glommio's readiness poll through
    /// io_uring, which it arms after every read that does not fill the
    /// buffer.
    fn try_read(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        self.without_waiting(|fd| {
            rustix::net::recv(fd, &mut *buf, rustix::net::RecvFlags::DONTWAIT).map(|(n, _)| n)
        })
    }

    /// A response buffer from the pool: 8 bytes of room for a record header,
    /// then the payload.
    pub(crate) fn take_out(&self) -> Vec<u8> {
        let mut out = self.pools.outs.borrow_mut().take().unwrap_or_default();
        out.clear();
        out.resize(8, 0);
        out
    }

    /// Ends a request: removes its slot, returns its buffers to the pools,
    /// and tells the reader whether to close.
    pub(crate) fn finish_slot(
        &self,
        slot: &Rc<Slot>,
        params: Box<Params>,
        out: Vec<u8>,
        close: bool,
    ) {
        let mut state = self.state.borrow_mut();
        state.slots.retain(|s| !Rc::ptr_eq(s, slot));
        // Body chunks the handler left unread let go of their read blocks
        // now, not when the slot is next used: a kept connection whose
        // handler ignored a large body would otherwise have its blocks
        // pinned, and its reader waiting for room, until then.
        slot.input.borrow_mut().reset();
        // The request ends right after this, without another await:
        // the slot is free for the next request.
        let limit = self.pools.limit;
        keep(&self.pools.slots, limit, Rc::clone(slot));
        keep(&self.pools.params, limit, params);
        keep(&self.pools.outs, limit, out);
        state.served += 1;
        if close
            || self
                .settings
                .max_requests_per_conn
                .is_some_and(|max| state.served >= max)
        {
            state.closing = true;
        }
        let wake = state.closing || state.core.is_closed() || self.waiting_room.get();
        if state.slots.is_empty() {
            self.deadline
                .set(Some(Instant::now() + self.settings.idle_timeout));
        }
        drop(state);
        if wake {
            self.wake_reader.notify();
        }
        self.idle.notify();
    }

    /// Called by the executor's sweeper: wakes the reader when the deadline
    /// passed.
    pub(crate) fn check_deadline(&self, now: Instant) {
        if self.deadline.get().is_some_and(|deadline| deadline <= now) {
            self.timed_out.set(true);
            self.wake_reader.notify();
        }
    }

    /// The server stops with this connection's requests still running:
    /// shuts its socket down both ways, so that the web server sees it end
    /// now, and its reads and writes end (with them the handlers that read
    /// or write). The socket closes once its task is done.
    pub(crate) fn cut(&self) {
        self.state.borrow_mut().broken = true;
        if let Ok(stream) = self.stream.try_borrow() {
            // SAFETY: the descriptor belongs to `stream`, which stays open
            // while it is borrowed here, and the borrowed descriptor does
            // not outlive this call.
            let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
        self.wake_reader.notify();
    }

    /// Whether the connection should close now: asked to and idle.
    fn should_close(&self) -> bool {
        let state = self.state.borrow();
        state.slots.is_empty() && (state.closing || state.core.is_closed())
    }
}

/// Runs requests whose params are complete (or that were aborted first).
pub(crate) trait Runner {
    /// Runs the request on `slot` to its end.
    async fn run(&self, conn: &Conn, slot: &Rc<Slot>);

    /// Runs the request on `slot` as a task of its own.
    fn spawn(&self, conn: Rc<Conn>, slot: Rc<Slot>);
}

/// Serves one connection until it closes: its reader, and the requests
/// that run in the same task.
pub(crate) async fn serve(conn: Rc<Conn>, runner: &impl Runner) {
    let mut reader = std::pin::pin!(read_then_wait(&conn, runner));
    let mut requests = std::pin::pin!(run_inline(&conn, runner));
    let (mut linger, mut ran) = (None, false);
    let linger = poll_fn(|cx| {
        let mut again = true;
        loop {
            if linger.is_none() {
                if let Poll::Ready(done) = reader.as_mut().poll(cx) {
                    linger = Some(done);
                }
            }
            let woken_before = conn.wake_reader.fired.get();
            if !ran {
                ran = requests.as_mut().poll(cx).is_ready();
            }
            if let (Some(done), true) = (linger, ran) {
                return Poll::Ready(done);
            }
            // A request that just ended woke the reader (to close, say):
            // it goes on now, not after every other task had its turn.
            let woken = !woken_before && conn.wake_reader.fired.get();
            if !(again && woken && linger.is_none()) {
                return Poll::Pending;
            }
            again = false;
        }
    })
    .await;
    close(&conn, linger).await;
}

/// Starts the request on `slot`: in the connection's own task when it runs
/// none, else in a task of its own.
fn start_request(conn: &Rc<Conn>, runner: &impl Runner, slot: Rc<Slot>) {
    if conn.inline.borrow().is_some() {
        runner.spawn(Rc::clone(conn), slot);
    } else {
        *conn.inline.borrow_mut() = Some(slot);
        conn.wake_runner.notify();
    }
}

/// Runs the requests handed to the connection's own task, one at a time,
/// until the reader is done.
async fn run_inline(conn: &Conn, runner: &impl Runner) {
    loop {
        let next = conn.inline.borrow().clone();
        match next {
            Some(slot) => {
                runner.run(conn, &slot).await;
                conn.inline.borrow_mut().take();
            }
            None if conn.reader_done.get() => return,
            None => conn.wake_runner.wait().await,
        }
    }
}

/// Reads until the connection ends, then waits for its requests to end;
/// returns whether to linger on close.
async fn read_then_wait(conn: &Rc<Conn>, runner: &impl Runner) -> bool {
    let result = read_loop(conn, runner).await;
    let gone = match &result {
        Ok(()) => io::ErrorKind::ConnectionAborted,
        Err(error) => {
            if !matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ) {
                eprintln!("simple-fastcgi: closing a connection: {error}");
            }
            error.kind()
        }
    };
    // Requests whose handler never started (params cut short) end here;
    // those still running learn that no more input comes.
    conn.state
        .borrow_mut()
        .slots
        .retain(|slot| slot.spawned.get());
    let slots: Vec<Rc<Slot>> = conn.state.borrow().slots.clone();
    // A body the handler did not read, the empty STDIN that Caddy writes
    // after the params, a record cut short: closing under the web server's
    // write would fail it (502).
    let input_open = conn.state.borrow().core.expects_input();
    for slot in &slots {
        slot.input.borrow_mut().gone.get_or_insert(gone);
        slot.signal.notify();
        slot.abort_signal.notify();
    }
    drop(slots);
    while !conn.state.borrow().slots.is_empty() {
        conn.idle.wait().await;
    }
    conn.reader_done.set(true);
    conn.wake_runner.notify();
    input_open && result.is_ok()
}

/// Before the connection is dropped (which closes it): when the web
/// server may still be sending, shuts our side, then reads and drops what
/// it sends for a while, so the close is not a reset.
#[allow(
    clippy::await_holding_refcell_ref,
    reason = "runs after every request task ended: nothing else borrows the stream"
)]
async fn close(conn: &Conn, linger: bool) {
    let broken = conn.state.borrow().broken;
    if !linger || broken {
        // Dropping the connection closes the socket: no shutdown first.
        return;
    }
    conn.disarm();
    let _ = conn
        .stream
        .borrow()
        .shutdown(std::net::Shutdown::Write)
        .await;
    let _ = conn
        .stream
        .borrow()
        .set_read_timeout(Some(conn.settings.lingering_close));
    let mut scratch = vec![0u8; 4096];
    let deadline = std::time::Instant::now() + conn.settings.lingering_close;
    while std::time::Instant::now() < deadline {
        match conn.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What ended a wait for input.
enum Woken {
    Read(io::Result<usize>),
    Reader,
}

/// The reader: reads, feeds the core, routes events, until the connection
/// closes.
async fn read_loop(conn: &Rc<Conn>, runner: &impl Runner) -> io::Result<()> {
    let mut current = conn.pools.block();
    let mut retired: Vec<Rc<Block>> = Vec::new();
    let result = read_blocks(conn, runner, &mut current, &mut retired).await;
    // The blocks go back to the executor's pool once no chunk holds them.
    for block in retired.into_iter().chain([current]) {
        if Rc::strong_count(&block) == 1 {
            keep(&conn.pools.blocks, conn.pools.limit, block);
        }
    }
    result
}

async fn read_blocks(
    conn: &Rc<Conn>,
    runner: &impl Runner,
    current: &mut Rc<Block>,
    retired: &mut Vec<Rc<Block>>,
) -> io::Result<()> {
    let settings = Rc::clone(&conn.settings);
    let (mut start, mut end) = (0usize, 0usize);
    let mut replies: Vec<u8> = Vec::new();
    // The last read brought bytes: more may follow soon.
    let mut flowing = false;
    // The room the next read asks for. A read that fills its room asks for
    // twice as much next: a body arriving in one burst is read in a few
    // large reads, not in as many reads of the initialized room (a block
    // grows only when asked to, so small requests keep small blocks).
    let mut want = MIN_ROOM;
    loop {
        // Feed what is buffered until the core needs more.
        loop {
            let (idle, ready) = {
                let mut state = conn.state.borrow_mut();
                let progress = state
                    .core
                    .feed(&current.bytes[start..end])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let consumed_to = start + progress.consumed;
                let idle = progress.consumed == 0 && progress.event.is_none();
                let mut ready = None;
                match progress.event {
                    Some(Event::Begin {
                        request_id,
                        role,
                        keep_conn,
                        output,
                    }) => {
                        let mut params = conn.pools.params.borrow_mut().take().unwrap_or_default();
                        params.clear();
                        let slot = conn
                            .pools
                            .slots
                            .borrow_mut()
                            .take()
                            .unwrap_or_else(|| Rc::new(Slot::new()));
                        slot.begin(request_id, role, keep_conn, params, output);
                        state.slots.push(slot);
                    }
                    Some(Event::Params { request_id, bytes }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            if slot.params_error.get().is_none() {
                                if let Some(params) = slot.params.borrow_mut().as_mut() {
                                    slot.params_error.set(params.feed(bytes).err());
                                }
                            }
                        }
                    }
                    Some(Event::ParamsEnd { request_id }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            if slot.params_error.get().is_none() {
                                if let Some(params) = slot.params.borrow_mut().as_mut() {
                                    slot.params_error.set(params.finish().err());
                                }
                            }
                            slot.params_done.set(true);
                            ready = Some(Rc::clone(slot));
                        }
                    }
                    Some(Event::Stdin { request_id, bytes }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            let chunk = Chunk {
                                block: Rc::clone(current),
                                start: consumed_to - bytes.len(),
                                end: consumed_to,
                            };
                            slot.input.borrow_mut().stdin.push_back(chunk);
                            slot.signal.notify();
                        }
                    }
                    Some(Event::Data { request_id, bytes }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            let chunk = Chunk {
                                block: Rc::clone(current),
                                start: consumed_to - bytes.len(),
                                end: consumed_to,
                            };
                            slot.input.borrow_mut().data.push_back(chunk);
                            slot.signal.notify();
                        }
                    }
                    Some(Event::StdinEnd { request_id }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            slot.input.borrow_mut().stdin_done = true;
                            slot.signal.notify();
                        }
                    }
                    Some(Event::DataEnd { request_id }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            slot.input.borrow_mut().data_done = true;
                            slot.signal.notify();
                        }
                    }
                    Some(Event::Abort { request_id }) => {
                        if let Some(slot) = find(&state.slots, request_id) {
                            slot.input.borrow_mut().aborted = true;
                            slot.signal.notify();
                            slot.abort_signal.notify();
                            if !slot.params_done.get() {
                                // Aborted before its handler could start: it
                                // starts only to end at once.
                                ready = Some(Rc::clone(slot));
                            }
                        }
                    }
                    None => {}
                }
                start = consumed_to;
                replies.extend_from_slice(state.core.pending_output());
                let n = state.core.pending_output().len();
                state.core.advance_output(n);
                (idle, ready)
            };
            if let Some(slot) = ready.filter(|slot| !slot.spawned.replace(true)) {
                start_request(conn, runner, slot);
            }
            if !replies.is_empty() {
                conn.write_locked(&mut [IoSlice::new(&replies)]).await?;
                replies.clear();
            }
            if idle {
                break;
            }
        }
        if conn.should_close() {
            return Ok(());
        }

        // Room to read into: this block (compacted), or another one.
        if let Some(block) = Rc::get_mut(current) {
            block.bytes.copy_within(start..end, 0);
        } else {
            let next = loop {
                if let Some(index) = retired.iter().position(|b| Rc::strong_count(b) == 1) {
                    break retired.swap_remove(index);
                }
                if retired.len() + 1 < settings.max_buffers_per_conn.max(1) {
                    break conn.pools.block();
                }
                // Every block holds body bytes a handler has not read yet.
                // A multishot recv would go on filling receive buffers
                // meanwhile: it stops (what it brought stays, in order).
                if let (Some(ring), Some(id)) = (&conn.pools.ring, conn.armed.get()) {
                    ring.pause(id);
                }
                conn.waiting_room.set(true);
                conn.wake_reader.wait().await;
                conn.waiting_room.set(false);
                if conn.should_close() {
                    return Ok(());
                }
            };
            let old = std::mem::replace(current, next);
            if let Some(block) = Rc::get_mut(current) {
                let kept = end - start;
                if block.bytes.len() < kept {
                    block.bytes.resize(kept, 0);
                }
                block.bytes[..kept].copy_from_slice(&old.bytes[start..end]);
            }
            retired.push(old);
        }
        end -= start;
        start = 0;

        // The deadline that fits: idle between requests, the read timeout
        // while a request waits for input, none while handlers run.
        let deadline = {
            let state = conn.state.borrow();
            if state.slots.is_empty() {
                Some(settings.idle_timeout)
            } else if state.core.awaits_input() {
                Some(settings.read_timeout)
            } else {
                None
            }
        };
        conn.deadline
            .set(deadline.map(|timeout| Instant::now() + timeout));
        // After bytes came: let the requests just started and the other
        // connections run first, then look for more without glommio; only
        // when there is none, wait through it. With nothing buffered, the
        // block goes back to the pool while the others run: busy
        // connections then share a few blocks instead of holding one each.
        // The room the read gets (the landing buffer's, without a block).
        let mut room = MIN_ROOM;
        let direct = if let Some(ring) = &conn.pools.ring {
            let (woken, ring_room) = conn.ring_read(ring, current, end, want).await?;
            room = ring_room;
            Some(woken)
        } else if flowing {
            if end == 0 {
                conn.lend_block(current);
            }
            futures_lite::future::yield_now().await;
            if end == 0 {
                *current = conn.pools.block();
            }
            // A request that ran meanwhile may have asked to close.
            if conn.wake_reader.fired.replace(false) {
                Some(Woken::Reader)
            } else {
                let buf = room_in(current, end, want)?;
                room = buf.len();
                conn.try_read(buf).map(Woken::Read)
            }
        } else {
            None
        };
        let woken = match direct {
            Some(woken) => woken,
            None if end == 0 => conn.wait_without_block(current).await,
            None => {
                let buf = room_in(current, end, want)?;
                room = buf.len();
                future::or(async { Woken::Read(conn.read(buf).await) }, async {
                    conn.wake_reader.wait().await;
                    Woken::Reader
                })
                .await
            }
        };
        flowing = matches!(woken, Woken::Read(Ok(n)) if n > 0);
        want = match woken {
            Woken::Read(Ok(n)) if n == room => (2 * room).clamp(MIN_ROOM, BLOCK),
            _ => MIN_ROOM,
        };
        match woken {
            Woken::Read(Ok(0)) => {
                let quiet = conn.state.borrow().slots.is_empty() && start == end;
                return if quiet {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the web server closed the connection",
                    ))
                };
            }
            Woken::Read(Ok(n)) => end += n,
            Woken::Reader if conn.timed_out.get() => {
                let quiet = conn.state.borrow().slots.is_empty() && start == end;
                return if quiet {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the web server sent nothing for the read timeout",
                    ))
                };
            }
            Woken::Read(Err(error)) if error.kind() == io::ErrorKind::TimedOut => {
                let quiet = conn.state.borrow().slots.is_empty() && start == end;
                return if quiet { Ok(()) } else { Err(error) };
            }
            Woken::Read(Err(error)) => return Err(error),
            Woken::Reader => {}
        }
    }
}

/// The room to read into after `end` in the reader's block, which no
/// chunk shares once the reader has made room.
fn room_in(current: &mut Rc<Block>, end: usize, want: usize) -> io::Result<&mut [u8]> {
    Rc::get_mut(current)
        .map(|block| block.room_after(end, want))
        .ok_or_else(|| io::Error::other("read block still shared"))
}

/// Abandons a socket ring `send` when dropped: a write whose future is
/// dropped before its `send` completed. One that was submitted may have
/// written part of a record, which nothing can follow on the wire: the
/// connection is broken then, as after a failed write.
struct Abandon<'a> {
    ring: &'a crate::ring::SocketRing,
    id: Option<usize>,
    conn: &'a Conn,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if self.ring.abandon(id) {
                self.conn.state.borrow_mut().broken = true;
            }
        }
    }
}

/// The request `request_id` names now: the newest slot with that id. A
/// slot stays in the list until its request's task is done with it, and
/// that can come after its END_REQUEST reached the web server, which may
/// then begin its next request under the same id: the old slot must not
/// take that request's records.
fn find(slots: &[Rc<Slot>], request_id: u16) -> Option<&Rc<Slot>> {
    slots
        .iter()
        .rev()
        .find(|slot| slot.request_id.get() == request_id)
}

/// Waits for `future` at most `timeout`; `None` when it took longer.
pub(crate) async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_newest_request() {
        let ended = Rc::new(Slot::new());
        ended.request_id.set(1);
        let other = Rc::new(Slot::new());
        other.request_id.set(2);
        let next = Rc::new(Slot::new());
        next.request_id.set(1);
        let slots = vec![Rc::clone(&ended), other, Rc::clone(&next)];
        assert!(find(&slots, 1).is_some_and(|slot| Rc::ptr_eq(slot, &next)));
        assert!(find(&slots, 2).is_some_and(|slot| slot.request_id.get() == 2));
        assert!(find(&slots, 3).is_none());
    }

    #[test]
    fn a_block_initializes_only_the_room_reads_need() {
        let mut block = Block {
            bytes: Vec::with_capacity(BLOCK),
        };
        // A first read gets MIN_ROOM, and only that is initialized.
        assert_eq!(block.room_after(0, MIN_ROOM).len(), MIN_ROOM);
        assert_eq!(block.bytes.len(), MIN_ROOM);
        block.bytes[..5].copy_from_slice(b"hello");
        // Less than MIN_ROOM left: doubles, keeping what was read.
        assert_eq!(block.room_after(100, MIN_ROOM).len(), 2 * MIN_ROOM - 100);
        assert_eq!(&block.bytes[..5], b"hello");
        // Enough left: nothing more is initialized.
        assert_eq!(block.room_after(200, MIN_ROOM).len(), 2 * MIN_ROOM - 200);
        assert_eq!(block.bytes.len(), 2 * MIN_ROOM);
        // Asked for more (the last read filled its room): grows to fit.
        assert_eq!(block.room_after(0, 6 * MIN_ROOM).len(), 6 * MIN_ROOM);
        assert_eq!(&block.bytes[..5], b"hello");
        // Never past BLOCK, and the capacity reserved up front suffices.
        let mut end = 0;
        while block.bytes.len() < BLOCK {
            end = block.bytes.len();
            assert!(!block.room_after(end, MIN_ROOM).is_empty());
        }
        assert_eq!(block.bytes.len(), BLOCK);
        assert_eq!(block.bytes.capacity(), BLOCK);
        assert!(block.room_after(BLOCK, BLOCK).is_empty());
        assert!(block.room_after(0, 2 * BLOCK).len() == BLOCK);
        assert!(end < BLOCK);
    }

    #[test]
    fn a_write_skips_empty_slices_and_resumes_mid_slice() {
        // write_all relies on this: after every advance the first slice
        // left has bytes (glommio is handed it to wait for room).
        let parts: [&[u8]; 4] = [b"", b"head", b"", b"payload"];
        let mut slices = parts.map(IoSlice::new);
        let mut at = &mut slices[..];
        let rest = |at: &[IoSlice<'_>]| at.iter().map(|s| &s[..]).collect::<Vec<_>>().concat();
        IoSlice::advance_slices(&mut at, 0);
        assert_eq!(&at[0][..], b"head");
        IoSlice::advance_slices(&mut at, 2);
        assert_eq!(rest(at), b"adpayload");
        // Across the end of a slice and past an empty one.
        IoSlice::advance_slices(&mut at, 2);
        assert_eq!(&at[0][..], b"payload");
        IoSlice::advance_slices(&mut at, 3);
        assert_eq!(rest(at), b"load");
        IoSlice::advance_slices(&mut at, 4);
        assert!(at.is_empty());
    }
}
