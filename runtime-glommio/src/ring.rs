//! An executor's socket ring ([`Settings::socket_ring`]): the connections'
//! socket reads and writes on an io_uring of the executor's own, set up
//! with `COOP_TASKRUN`, `SINGLE_ISSUER` and `TASKRUN_FLAG`, and a ring of
//! provided receive buffers (`fcgi-least --uring` in `benches/` is a
//! similar set-up without glommio).
//!
//! A connection queues operations: a multishot `recv`, which takes a
//! provided buffer each time its bytes come and goes on, or a `send` of
//! bytes copied into the operation. The
//! executor's driver task hands everything queued to the kernel with one
//! `io_uring_enter`, and passes the completions to the connections. With
//! `COOP_TASKRUN` the kernel completes a `recv` whose bytes came on the
//! executor's next syscall, whichever it is, without interrupting it (it
//! raises `TASKRUN` meanwhile, and the driver enters for it), so a busy
//! executor makes one syscall for many connections' reads and writes.
//! When nothing is queued and nothing has completed, the driver waits
//! through glommio, on an eventfd registered with the ring, which the
//! kernel signals as it posts completions: the executor sleeps as it does
//! without the ring.
//!
//! Not `DEFER_TASKRUN`, which would keep the completions until the driver
//! asks: with it, the kernel (Linux 6.18) signals the eventfd only an RCU
//! grace period after the bytes came, about 15 ms, so a sleeping executor
//! answered a lone client's request that much late. `fcgi-least --uring`,
//! which sleeps in `io_uring_enter` itself, needs no eventfd and keeps it.
//!
//! Nothing the kernel uses can go away under it: receive buffers belong to
//! the ring, and a `send`'s bytes to its operation, until it completes; a
//! connection that stops waiting abandons its operations, which are
//! dropped before submission or cancelled.
//!
//! [`Settings::socket_ring`]: crate::Settings::socket_ring

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Poll, Waker};

use glommio::io::BufferedFile;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// How big each provided receive buffer is (a 64 KiB body takes four
/// `recv`s; how many there are is [`Settings::socket_ring_buffers`]). A
/// write of at most `BUFFER_LEN` bytes goes through the ring; a longer one
/// is written directly.
///
/// [`Settings::socket_ring_buffers`]: crate::Settings::socket_ring_buffers
pub(crate) const BUFFER_LEN: usize = 16 * 1024;
/// The most provided buffers the kernel takes in one group.
const MAX_BUFFERS: u16 = 1 << 15;
/// The most bytes a free operation slot keeps allocated for its next
/// `send`: enough for a small response.
const KEPT_SEND_ROOM: usize = 4096;
/// The buffer group the provided buffers form.
const GROUP: u16 = 0;
/// Submission queue entries; more queued operations wait for the next
/// `io_uring_enter`.
const RING_ENTRIES: u32 = 256;
/// User data of cancellations, whose completions are ignored.
const CANCEL: u64 = u64::MAX;
/// The most completions of a connection's multishot `recv` its reader has
/// not taken yet: at this many the `recv` is cancelled (the reader arms a
/// new one once it has taken them), as it is when the reader stops for
/// room ([`SocketRing::pause`]), so that a connection whose requests do
/// not read holds a few receive buffers, not all of them. (The kernel
/// takes up to 32 in one go for a connection whose bytes keep coming, so
/// a burst can bring more before the cancellation lands.)
const MAX_UNTAKEN: usize = 4;

/// An operation's result: the kernel's result and the completion's flags.
pub(crate) type Outcome = (i32, u32);

/// Where an operation is.
#[derive(Default)]
enum State {
    #[default]
    Free,
    Queued,
    InKernel,
    Done(Outcome),
    /// Its owner went away while the kernel had it: freed (and its buffer
    /// given back) when it completes.
    Abandoned,
}

/// One operation's slot.
#[derive(Default)]
struct Op {
    state: State,
    waker: Option<Waker>,
    /// A send's bytes, owned here so that nothing the kernel reads can go
    /// away before it completes.
    bytes: Vec<u8>,
    /// A multishot `recv`'s completions that go on (`IORING_CQE_F_MORE`),
    /// until its reader takes them; its last one is its `Done`.
    received: VecDeque<Outcome>,
    /// A cancellation of it was queued.
    cancelling: bool,
}

/// The executor's socket ring.
pub(crate) struct SocketRing {
    ring: RefCell<IoUring>,
    provided: RefCell<Provided>,
    ops: RefCell<Vec<Op>>,
    free: RefCell<Vec<usize>>,
    queue: RefCell<Vec<squeue::Entry>>,
    /// Operations the kernel holds (recvs that wait for data).
    in_kernel: Cell<usize>,
    driver: RefCell<Option<Waker>>,
    /// The executor stops: the driver ends.
    stopping: Cell<bool>,
    wake_file: BufferedFile,
}

/// The ring of provided buffers, shared with the kernel, and the buffers.
struct Provided {
    /// `count` entries in a page-aligned mapping.
    entries: NonNull<types::BufRingEntry>,
    /// How many buffers: a power of two, at most `MAX_BUFFERS`.
    count: u16,
    tail: u16,
    /// The buffers: `count * BUFFER_LEN` bytes from a leaked box, which
    /// the kernel writes into, so Rust holds no reference to them; freed
    /// by [`SocketRing`]'s drop once the kernel holds no operation.
    memory: NonNull<u8>,
}

impl Provided {
    /// `count` buffers (rounded down to a power of two, which the kernel
    /// needs, and to at most `MAX_BUFFERS`; at least one).
    fn new(ring: &IoUring, count: u16) -> io::Result<Provided> {
        let count = 1 << count.clamp(1, MAX_BUFFERS).ilog2();
        let size = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: a new anonymous private mapping, which nothing else uses.
        // It is never unmapped (one per executor, for the life of the
        // process), so the kernel's use of it (registered below) stays
        // valid even after the ring is gone.
        let entries = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                size,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }?;
        let entries = NonNull::new(entries.cast::<types::BufRingEntry>())
            .ok_or_else(|| io::Error::other("mmap gave a null pointer"))?;
        // SAFETY: `entries` holds `count` page-aligned entries for good.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.as_ptr() as u64, count, GROUP, 0)
        }?;
        let memory = Box::into_raw(vec![0u8; usize::from(count) * BUFFER_LEN].into_boxed_slice());
        let mut provided = Provided {
            entries,
            count,
            tail: 0,
            memory: NonNull::new(memory.cast::<u8>())
                .ok_or_else(|| io::Error::other("a null allocation"))?,
        };
        for id in 0..count {
            provided.give_back(id);
        }
        Ok(provided)
    }

    /// All the buffers' bytes together.
    fn memory_len(&self) -> usize {
        usize::from(self.count) * BUFFER_LEN
    }

    /// Bytes `from..to` of buffer `id`, which a completed `recv` filled
    /// and the kernel no longer has.
    fn bytes(&self, id: u16, from: usize, to: usize) -> &[u8] {
        if id >= self.count {
            return &[];
        }
        let to = to.min(BUFFER_LEN);
        let from = from.min(to);
        // SAFETY: `id < count` and `from <= to <= BUFFER_LEN`, so the
        // range lies within the allocation of `count * BUFFER_LEN` bytes; the buffer is
        // not the kernel's until `give_back`, which needs `&mut self`.
        unsafe {
            std::slice::from_raw_parts(
                self.memory
                    .as_ptr()
                    .add(usize::from(id) * BUFFER_LEN + from),
                to - from,
            )
        }
    }

    /// Hands buffer `id` to the kernel again.
    fn give_back(&mut self, id: u16) {
        if id >= self.count {
            return;
        }
        // Within the allocation: `id < count`.
        let addr = self.memory.as_ptr() as u64 + (usize::from(id) * BUFFER_LEN) as u64;
        // `count` is a power of two, so slots follow the wrapping tail.
        let slot = usize::from(self.tail % self.count);
        // SAFETY: within the mapping; only this thread writes entries, and
        // the kernel reads one only once the tail published below covers it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(u32::try_from(BUFFER_LEN).unwrap_or(u32::MAX));
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail overlays entry 0's reserved field, aligned.
        let tail =
            unsafe { &*types::BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl SocketRing {
    /// The executor's ring, with `buffers` provided receive buffers
    /// ([`Settings::socket_ring_buffers`]), or why there is none.
    ///
    /// [`Settings::socket_ring_buffers`]: crate::Settings::socket_ring_buffers
    pub(crate) fn new(buffers: u16) -> io::Result<Rc<SocketRing>> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)?;
        let provided = Provided::new(&ring, buffers)?;
        // Blocking: glommio's read of it then waits (in the kernel, through
        // io_uring) instead of failing with EAGAIN.
        let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        // The kernel signals it for the driver's own completions too, so a
        // sleep that follows a busy moment ends at once, and the driver
        // looks again: a short spin, in effect. Signals switched off while
        // the driver is awake saved those wake-ups (9.0 allocations per
        // request with one client instead of 14.7) but cost more CPU under
        // load, where sleeping through glommio is dear (5.0-5.6 us per
        // request with 8 connections, against 4.1-4.35 in most runs
        // without; runs of a noisy hour, not interleaved).
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        // SAFETY: the eventfd is ours, handed to glommio, which closes it.
        let wake_file = unsafe { BufferedFile::from_raw_fd(eventfd.into_raw_fd()) };
        Ok(Rc::new(SocketRing {
            ring: RefCell::new(ring),
            provided: RefCell::new(provided),
            ops: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            queue: RefCell::new(Vec::new()),
            in_kernel: Cell::new(0),
            driver: RefCell::new(None),
            stopping: Cell::new(false),
            wake_file,
        }))
    }

    /// A free operation slot.
    fn slot(&self) -> usize {
        if let Some(id) = self.free.borrow_mut().pop() {
            return id;
        }
        let mut ops = self.ops.borrow_mut();
        ops.push(Op::default());
        ops.len() - 1
    }

    /// Queues `entry` as operation `id`, and wakes the driver.
    fn enqueue(&self, id: usize, entry: squeue::Entry) {
        self.ops.borrow_mut()[id].state = State::Queued;
        self.queue.borrow_mut().push(entry.user_data(id as u64));
        if let Some(waker) = self.driver.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Queues a multishot `recv` on `fd`: each time bytes come, the kernel
    /// takes a provided buffer and completes with them, and the `recv`
    /// goes on (its completions carry `IORING_CQE_F_MORE`) until the end
    /// of the stream, an error, no free buffer (`-ENOBUFS`) or a
    /// cancellation (`-ECANCELED`, when [`MAX_UNTAKEN`] completions wait).
    pub(crate) fn recv(&self, fd: RawFd) -> usize {
        let id = self.slot();
        let entry = opcode::RecvMulti::new(types::Fd(fd), GROUP).build();
        self.enqueue(id, entry);
        id
    }

    /// Queues a `send` of `slices` (copied) on `fd`, which completes in the
    /// call that submits it (`MSG_DONTWAIT`: `-EAGAIN` when the socket is
    /// full).
    pub(crate) fn send(&self, fd: RawFd, slices: &[io::IoSlice<'_>]) -> usize {
        let id = self.slot();
        let entry = {
            let mut ops = self.ops.borrow_mut();
            let bytes = &mut ops[id].bytes;
            bytes.clear();
            for slice in slices {
                bytes.extend_from_slice(slice);
            }
            opcode::Send::new(
                types::Fd(fd),
                bytes.as_ptr(),
                u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            )
            .flags(libc_flags::MSG_DONTWAIT | libc_flags::MSG_NOSIGNAL)
            .build()
        };
        self.enqueue(id, entry);
        id
    }

    /// The next outcome of operation `id`: a multishot `recv`'s
    /// completions in order, its last one (without `IORING_CQE_F_MORE`)
    /// when it ended; the slot is free again after an operation's last.
    pub(crate) fn poll(&self, id: usize, waker: &Waker) -> Poll<Outcome> {
        let mut ops = self.ops.borrow_mut();
        let op = &mut ops[id];
        if let Some(outcome) = op.received.pop_front() {
            return Poll::Ready(outcome);
        }
        if let State::Done(outcome) = op.state {
            op.cancelling = false;
            op.state = State::Free;
            op.waker = None;
            trim(op);
            drop(ops);
            self.free.borrow_mut().push(id);
            return Poll::Ready(outcome);
        }
        // The same task polls again and again while it waits: its waker is
        // kept, not cloned anew each time.
        if !op.waker.as_ref().is_some_and(|kept| kept.will_wake(waker)) {
            op.waker = Some(waker.clone());
        }
        Poll::Pending
    }

    /// Waits for operation `id`.
    pub(crate) async fn wait(&self, id: usize) -> Outcome {
        poll_fn(|cx| self.poll(id, cx.waker())).await
    }

    /// Its owner no longer wants operation `id`: a queued one is dropped
    /// before submission, one in the kernel is cancelled, a completed one
    /// gives its buffer back.
    ///
    /// Returns whether the operation may have done something already (it
    /// was submitted): an abandoned `send` may have written some of its
    /// bytes.
    pub(crate) fn abandon(&self, id: usize) -> bool {
        let mut ops = self.ops.borrow_mut();
        let op = &mut ops[id];
        op.waker = None;
        // Bytes a multishot recv brought that nobody will take.
        for (_, flags) in op.received.drain(..) {
            if let Some(buffer) = cqueue::buffer_select(flags) {
                self.provided.borrow_mut().give_back(buffer);
            }
        }
        match std::mem::take(&mut op.state) {
            // Dropped from the queue when the driver comes to it.
            State::Queued => {
                op.state = State::Abandoned;
                false
            }
            State::InKernel => {
                op.state = State::Abandoned;
                let cancelling = std::mem::replace(&mut op.cancelling, true);
                drop(ops);
                if !cancelling {
                    self.cancel(id);
                }
                true
            }
            State::Done((_, flags)) => {
                op.cancelling = false;
                trim(op);
                drop(ops);
                if let Some(buffer) = cqueue::buffer_select(flags) {
                    self.provided.borrow_mut().give_back(buffer);
                }
                self.free.borrow_mut().push(id);
                true
            }
            State::Free | State::Abandoned => false,
        }
    }

    /// Stops multishot `recv` `id` from taking more receive buffers, while
    /// its reader waits for room or once [`MAX_UNTAKEN`] completions wait
    /// for it: it is cancelled (once), and ends (`-ECANCELED`) after the
    /// completions it already had, which stay to be taken.
    pub(crate) fn pause(&self, id: usize) {
        let mut ops = self.ops.borrow_mut();
        let Some(op) = ops.get_mut(id) else {
            return;
        };
        if matches!(op.state, State::InKernel) && !op.cancelling {
            op.cancelling = true;
            drop(ops);
            self.cancel(id);
        }
    }

    /// Queues the cancellation of operation `id`, which the kernel holds.
    fn cancel(&self, id: usize) {
        let cancel = opcode::AsyncCancel::new(id as u64)
            .build()
            .user_data(CANCEL);
        self.queue.borrow_mut().push(cancel);
        if let Some(waker) = self.driver.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Copies bytes `from..to` of provided buffer `buffer` into `into`.
    pub(crate) fn copy_out(&self, buffer: u16, from: usize, to: usize, into: &mut [u8]) -> usize {
        let provided = self.provided.borrow();
        let bytes = provided.bytes(buffer, from, to);
        let n = bytes.len().min(into.len());
        into[..n].copy_from_slice(&bytes[..n]);
        n
    }

    /// Ends the driver (the executor stops), once it has submitted what is
    /// queued.
    pub(crate) fn stop(&self) {
        self.stopping.set(true);
        if let Some(waker) = self.driver.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Hands a provided buffer whose bytes were taken back to the kernel.
    pub(crate) fn give_back(&self, buffer: u16) {
        self.provided.borrow_mut().give_back(buffer);
    }

    /// The driver: submits, has the kernel post what completed, hands out
    /// completions; sleeps through glommio when there is nothing.
    pub(crate) async fn drive(self: Rc<Self>) {
        // The read of the eventfd outlives the waits it serves: dropping a
        // read glommio has submitted would leave it armed in the kernel,
        // where it could take the next signal meant for its successor.
        let mut wake_read: Option<Pin<Box<dyn Future<Output = ()> + '_>>> = None;
        loop {
            let queued = !self.queue.borrow().is_empty();
            if self.stopping.get() && !queued {
                break;
            }
            // Work for the kernel: completions it holds back until this
            // thread enters it (TASKRUN), or entries an earlier call did
            // not take.
            let kernel_work = {
                let mut ring = self.ring.borrow_mut();
                let submission = ring.submission();
                submission.taskrun() || !submission.is_empty()
            };
            if queued || kernel_work {
                self.enter();
            }
            // Completions come with any syscall of this thread, glommio's
            // too: posted already, they are reaped without entering.
            if self.reap() > 0 || queued || kernel_work {
                futures_lite::future::yield_now().await;
                continue;
            }
            // Nothing to do now: wait for something queued, or (when the
            // kernel holds operations) for the kernel's signal.
            let queued_wait = poll_fn(|cx| {
                if self.queue.borrow().is_empty() && !self.stopping.get() {
                    *self.driver.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            });
            if self.in_kernel.get() > 0 {
                let read = wake_read.get_or_insert_with(|| {
                    Box::pin(async {
                        let _ = self.wake_file.read_at(0, 8).await;
                    })
                });
                let signalled = futures_lite::future::or(
                    async {
                        queued_wait.await;
                        false
                    },
                    async {
                        read.as_mut().await;
                        true
                    },
                )
                .await;
                if signalled {
                    wake_read = None;
                }
            } else {
                queued_wait.await;
            }
        }
        // A read of the eventfd still out completes before the driver
        // ends: signalled here, it takes this signal, and nothing of it
        // stays in glommio's ring.
        if let Some(read) = wake_read {
            // SAFETY: the eventfd belongs to `wake_file`, open while the
            // ring lives, and the borrowed descriptor does not outlive
            // this call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.wake_file.as_raw_fd()) };
            if rustix::io::write(fd, &1u64.to_ne_bytes()).is_ok() {
                read.await;
            }
        }
    }

    /// Submits what is queued, and has the kernel post what completed.
    fn enter(&self) {
        let mut ring = self.ring.borrow_mut();
        {
            let mut queue = self.queue.borrow_mut();
            let mut ops = self.ops.borrow_mut();
            let mut sq = ring.submission();
            let room = sq.capacity() - sq.len();
            let n = room.min(queue.len());
            for entry in queue.drain(..n) {
                let id = entry.get_user_data();
                if id != CANCEL {
                    let index = usize::try_from(id).unwrap_or(usize::MAX);
                    let Some(op) = ops.get_mut(index) else {
                        continue;
                    };
                    match op.state {
                        State::Queued => op.state = State::InKernel,
                        // Abandoned before submission: nothing to submit.
                        State::Abandoned => {
                            op.state = State::Free;
                            self.free.borrow_mut().push(index);
                            continue;
                        }
                        _ => continue,
                    }
                    self.in_kernel.set(self.in_kernel.get() + 1);
                }
                // SAFETY: a recv's buffer is the ring's provided memory, and
                // a send's bytes are its op's, kept until it completes.
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
            }
        }
        // With GETEVENTS: the kernel posts what completed (data that came
        // for armed recvs) inside this call.
        let to_submit = u32::try_from(ring.submission().len()).unwrap_or(u32::MAX);
        loop {
            // SAFETY: no wait (min_complete 0) and no argument.
            let entered = unsafe {
                ring.submitter()
                    .enter::<u64>(to_submit, 0, ENTER_GETEVENTS, None)
            };
            match entered {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INTR.raw_os_error()) => {}
                _ => break,
            }
        }
    }

    /// Hands out what completed; returns how many did.
    fn reap(&self) -> usize {
        let mut ring = self.ring.borrow_mut();
        let mut reaped = 0;
        for done in ring.completion() {
            reaped += 1;
            let id = done.user_data();
            if id == CANCEL {
                continue;
            }
            // A multishot recv goes on after this completion: it stays in
            // the kernel.
            let more = cqueue::more(done.flags());
            if !more {
                self.in_kernel.set(self.in_kernel.get().saturating_sub(1));
            }
            let mut ops = self.ops.borrow_mut();
            let index = usize::try_from(id).unwrap_or(usize::MAX);
            let Some(op) = ops.get_mut(index) else {
                continue;
            };
            let outcome = (done.result(), done.flags());
            match op.state {
                State::InKernel => {
                    if more {
                        op.received.push_back(outcome);
                    } else {
                        op.state = State::Done(outcome);
                    }
                    // Kept for the reader's next wait on a multishot recv.
                    if let Some(waker) = &op.waker {
                        waker.wake_by_ref();
                    }
                    if more && op.received.len() >= MAX_UNTAKEN {
                        drop(ops);
                        self.pause(index);
                    }
                }
                State::Abandoned => {
                    if !more {
                        op.state = State::Free;
                        op.cancelling = false;
                        trim(op);
                    }
                    drop(ops);
                    if let Some(buffer) = cqueue::buffer_select(done.flags()) {
                        self.provided.borrow_mut().give_back(buffer);
                    }
                    if !more {
                        self.free.borrow_mut().push(index);
                    }
                }
                _ => {}
            }
        }
        reaped
    }
}

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;

impl Drop for SocketRing {
    /// Cancels what the kernel still holds and waits (a second at most) for
    /// it, then frees the receive buffers; if the kernel still held any,
    /// they are left allocated rather than freed under it.
    fn drop(&mut self) {
        let ring = self.ring.get_mut();
        let mut held = self.in_kernel.get();
        if held > 0 {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(CANCEL);
            // SAFETY: a cancellation refers to no memory.
            if unsafe { ring.submission().push(&cancel) }.is_ok() {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
                while held > 0 && std::time::Instant::now() < deadline {
                    let wait = types::Timespec::new().nsec(100_000_000);
                    let args = types::SubmitArgs::new().timespec(&wait);
                    let _ = ring.submitter().submit_with_args(1, &args);
                    for done in ring.completion() {
                        if done.user_data() != CANCEL && !cqueue::more(done.flags()) {
                            held = held.saturating_sub(1);
                        }
                    }
                }
            }
        }
        if held == 0 {
            let provided = self.provided.get_mut();
            let memory =
                std::ptr::slice_from_raw_parts_mut(provided.memory.as_ptr(), provided.memory_len());
            // SAFETY: `memory` came from `Box::into_raw` of a boxed slice of
            // `count * BUFFER_LEN` bytes, is freed only here, and the kernel holds no
            // operation that could still write into it.
            drop(unsafe { Box::from_raw(memory) });
        }
    }
}

/// A slot being freed keeps the room of a small send for the next one, not
/// that of every large one it ever made.
fn trim(op: &mut Op) {
    if op.bytes.capacity() > KEPT_SEND_ROOM {
        op.bytes = Vec::new();
    }
}

/// Send flags, as the kernel's ABI numbers them.
mod libc_flags {
    pub(super) const MSG_DONTWAIT: i32 = 0x40;
    pub(super) const MSG_NOSIGNAL: i32 = 0x4000;
}
