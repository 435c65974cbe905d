//! `fcgi-least --uring`: the least-work server with its socket I/O on an
//! io_uring of its own, to show what a server that submits its reads and
//! writes through io_uring pays per request.
//!
//! Connections are taken by a multishot accept. Each has a multishot `recv`
//! that takes buffers from a ring of provided buffers, so data is handed
//! over as it arrives, and no read finds nothing. Answers are queued, and
//! each round of completions ends in one `io_uring_enter` that submits the
//! round's `send`s and waits for more. The ring is made with
//! `DEFER_TASKRUN`, so the kernel completes the `recv`s inside that call,
//! never by interrupting the server.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rustix::io::Errno;
use simple_fastcgi_std::Listener;

use super::{Records, Response};

/// Provided buffers: how many, and how big each is.
const BUFFERS: u16 = 128;
const BUFFER_LEN: u32 = 16 * 1024;
/// The buffer group the provided buffers form.
const GROUP: u16 = 0;
/// Submission queue entries.
const RING_ENTRIES: u32 = 1024;

/// What a completion is for: the user data's upper half (the lower half
/// is the socket's fd).
const ACCEPT: u64 = 1 << 32;
const RECV: u64 = 2 << 32;
const SEND: u64 = 3 << 32;

/// The server: its ring, buffers and connections.
struct Server {
    ring: IoUring,
    provided: Provided,
    conns: HashMap<RawFd, Conn>,
    /// Entries for the next `io_uring_enter`.
    pending: Vec<squeue::Entry>,
    /// Connections a completion concerned, to send to or close.
    touched: Vec<RawFd>,
    listener: RawFd,
    tcp: bool,
}

/// A connection on the ring.
struct Conn {
    socket: OwnedFd,
    records: Records,
    /// Bytes a `send` is out for, and answers queued after them. A `Vec`
    /// the kernel reads from is never grown.
    sending: Vec<u8>,
    queued: Vec<u8>,
    send_out: bool,
    recv_armed: bool,
    /// The peer is done or broke the protocol: close once no operation is
    /// out.
    closing: bool,
}

/// The ring of provided buffers, shared with the kernel, and the buffers.
struct Provided {
    /// `BUFFERS` entries in a page-aligned mapping that is never unmapped.
    entries: NonNull<types::BufRingEntry>,
    tail: u16,
    memory: Box<[u8]>,
}

impl Provided {
    fn new(ring: &IoUring) -> io::Result<Provided> {
        let size = usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: a new anonymous private mapping, which nothing else uses;
        // it is never unmapped, so the kernel's use of it (registered below)
        // stays valid for the life of the process.
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
        // SAFETY: `entries` holds `BUFFERS` entries, page-aligned, for the
        // life of the process (see above).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                BUFFERS,
                GROUP,
                0,
            )
        }?;
        let mut provided = Provided {
            entries,
            tail: 0,
            memory: vec![0u8; usize::from(BUFFERS) * BUFFER_LEN as usize].into_boxed_slice(),
        };
        for id in 0..BUFFERS {
            provided.give_back(id);
        }
        Ok(provided)
    }

    /// Buffer `id`'s first `len` bytes.
    fn bytes(&self, id: u16, len: usize) -> &[u8] {
        let at = usize::from(id) * BUFFER_LEN as usize;
        self.memory
            .get(at..at + len.min(BUFFER_LEN as usize))
            .unwrap_or_default()
    }

    /// Hands buffer `id` to the kernel again.
    fn give_back(&mut self, id: u16) {
        let at = usize::from(id) * BUFFER_LEN as usize;
        let addr = self.memory[at..].as_ptr() as u64;
        let slot = usize::from(self.tail % BUFFERS);
        // SAFETY: `slot` is within the mapping's `BUFFERS` entries, which
        // only this thread writes; the kernel reads an entry only once the
        // tail published below covers it, and gives it back (in a
        // completion) before the tail comes round to it again.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(BUFFER_LEN);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the 16-bit field over entry 0's reserved
        // bytes, aligned, in the live mapping; the kernel reads it
        // atomically.
        let tail =
            unsafe { &*types::BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

/// Serves on `listener` until the ring itself fails.
pub(crate) fn serve(listener: &Listener, response: &mut Response) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .map_err(|e| io::Error::new(e.kind(), format!("io_uring with DEFER_TASKRUN: {e}")))?;
    let provided = Provided::new(&ring)
        .map_err(|e| io::Error::new(e.kind(), format!("a ring of provided buffers: {e}")))?;
    let mut server = Server {
        ring,
        provided,
        conns: HashMap::new(),
        pending: Vec::with_capacity(RING_ENTRIES as usize),
        touched: Vec::new(),
        listener: listener.as_fd().as_raw_fd(),
        tcp: listener.is_tcp(),
    };
    server.pending.push(server.accept());
    let mut completions = Vec::with_capacity(RING_ENTRIES as usize);
    loop {
        server.submit_and_wait()?;
        completions.clear();
        completions.extend(server.ring.completion());
        for done in &completions {
            let fd = (done.user_data() & 0xffff_ffff) as RawFd;
            match done.user_data() & !0xffff_ffff {
                ACCEPT => server.accepted(done),
                RECV => server.received(fd, done, response),
                SEND => server.sent(fd, done.result()),
                _ => {}
            }
        }
        server.send_or_close();
    }
}

impl Server {
    /// Submits what is pending, and waits for a completion.
    fn submit_and_wait(&mut self) -> io::Result<()> {
        {
            let mut queue = self.ring.submission();
            let n = (queue.capacity() - queue.len()).min(self.pending.len());
            for entry in self.pending.drain(..n) {
                // SAFETY: an entry names a socket whose `Conn` stays in
                // `conns` until the entry's operations complete, and a
                // send's bytes are that `Conn`'s `sending`, neither moved
                // nor changed until then.
                if unsafe { queue.push(&entry) }.is_err() {
                    break;
                }
            }
        }
        match self.ring.submit_and_wait(1) {
            Err(error) if error.raw_os_error() != Some(Errno::INTR.raw_os_error()) => Err(error),
            _ => Ok(()),
        }
    }

    fn accept(&self) -> squeue::Entry {
        opcode::AcceptMulti::new(types::Fd(self.listener))
            .flags(libc_flags::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT)
    }

    fn accepted(&mut self, done: &cqueue::Entry) {
        if done.result() >= 0 {
            // SAFETY: a successful accept's result is a new socket that
            // nothing else owns.
            let socket = unsafe { OwnedFd::from_raw_fd(done.result()) };
            if self.tcp {
                let _ = rustix::net::sockopt::set_tcp_nodelay(&socket, true);
            }
            let fd = socket.as_raw_fd();
            self.conns.insert(
                fd,
                Conn {
                    socket,
                    records: Records::new(),
                    sending: Vec::with_capacity(4096),
                    queued: Vec::with_capacity(4096),
                    send_out: false,
                    recv_armed: true,
                    closing: false,
                },
            );
            self.pending.push(recv(fd));
        }
        if !cqueue::more(done.flags()) {
            self.pending.push(self.accept());
        }
    }

    /// Scans what a `recv` brought and queues the answers.
    fn received(&mut self, fd: RawFd, done: &cqueue::Entry, response: &mut Response) {
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        match (
            usize::try_from(done.result()),
            cqueue::buffer_select(done.flags()),
        ) {
            (Ok(0), _) => conn.closing = true,
            (Ok(len), Some(id)) => {
                let mut bytes = self.provided.bytes(id, len);
                while !bytes.is_empty() && !conn.closing {
                    bytes = &bytes[conn.records.skip_incoming(bytes.len())..];
                    if bytes.is_empty() {
                        break;
                    }
                    let room = conn.records.room();
                    let n = bytes.len().min(room.len());
                    room[..n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let queued = &mut conn.queued;
                    let mut answer = |answer: &[u8]| {
                        queued.extend_from_slice(answer);
                        Ok(())
                    };
                    conn.closing = !conn.records.scan(n, response, &mut answer).unwrap_or(false);
                }
                self.provided.give_back(id);
            }
            // Out of provided buffers: the multishot ends, and is armed
            // again below.
            (Err(_), _) if done.result() == -Errno::NOBUFS.raw_os_error() => {}
            _ => conn.closing = true,
        }
        if !cqueue::more(done.flags()) {
            conn.recv_armed = !conn.closing;
            if conn.recv_armed {
                self.pending.push(recv(fd));
            }
        }
        self.touched.push(fd);
    }

    fn sent(&mut self, fd: RawFd, result: i32) {
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        conn.send_out = false;
        match usize::try_from(result) {
            Ok(n) if n > 0 => drop(conn.sending.drain(..n.min(conn.sending.len()))),
            _ => {
                conn.closing = true;
                conn.sending.clear();
                conn.queued.clear();
            }
        }
        self.touched.push(fd);
    }

    /// Sends what the touched connections have queued, and closes those
    /// that are done.
    fn send_or_close(&mut self) {
        for fd in self.touched.drain(..) {
            let Some(conn) = self.conns.get_mut(&fd) else {
                continue;
            };
            if !conn.send_out {
                if conn.sending.is_empty() {
                    std::mem::swap(&mut conn.sending, &mut conn.queued);
                }
                if !conn.sending.is_empty() {
                    conn.send_out = true;
                    let len = u32::try_from(conn.sending.len()).unwrap_or(u32::MAX);
                    let send = opcode::Send::new(types::Fd(fd), conn.sending.as_ptr(), len);
                    self.pending
                        .push(send.build().user_data(SEND | fd_data(fd)));
                }
            }
            if conn.closing && !conn.send_out {
                if conn.recv_armed {
                    // Ends the multishot recv: its last completion comes
                    // without MORE, and the connection closes then.
                    let _ = rustix::net::shutdown(&conn.socket, rustix::net::Shutdown::Read);
                } else {
                    self.conns.remove(&fd);
                }
            }
        }
    }
}

fn recv(fd: RawFd) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), GROUP)
        .build()
        .user_data(RECV | fd_data(fd))
}

/// A socket's fd in the user data's lower half.
fn fd_data(fd: RawFd) -> u64 {
    u64::from(fd.unsigned_abs())
}

/// The one flag accept needs, as the kernel's ABI numbers it.
mod libc_flags {
    /// `SOCK_CLOEXEC` (`O_CLOEXEC`) on Linux.
    pub(super) const SOCK_CLOEXEC: i32 = 0o2_000_000;
}
