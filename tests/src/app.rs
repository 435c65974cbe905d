//! Starting example apps the way web servers do: a listening socket on fd 0.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::client::Addr;

/// glibc malloc settings for an app whose RSS a test measures: large
/// blocks always mmapped (no adaptive threshold), freed heap tops trimmed,
/// few arenas. By default glibc keeps freed blocks in per-thread arenas,
/// which shows as RSS that climbs for a while without anything leaking;
/// with these, RSS shows what the process really holds.
pub const MALLOC_RETURNS_MEMORY: &[(&str, &str)] = &[
    ("MALLOC_ARENA_MAX", "2"),
    ("MALLOC_MMAP_THRESHOLD_", "32768"),
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
];

/// A temporary directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh directory under the system's temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("sfcgi-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An example app running as a child process; killed on drop.
pub struct App {
    child: Child,
    addr: Addr,
    _dir: Option<TempDir>,
}

/// The transport an app listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP socket on 127.0.0.1, a free port.
    Tcp,
    /// A Unix socket in a temporary directory.
    Unix,
}

/// The path of an example binary of `simple-fastcgi-examples`.
/// `cargo test --workspace` builds them (the examples package has
/// integration tests); when one is missing, or older than a source file
/// it is built from (`cargo test -p simple-fastcgi-tests` alone does not
/// rebuild them), it is built here into a separate target directory, so
/// this never waits on cargo's lock (which cargo holds while tests run).
pub fn example_bin(name: &str) -> PathBuf {
    let built = target_dir().join(name);
    if is_fresh(&built) {
        return built;
    }
    static BUILD: Once = Once::new();
    let nested = target_dir().join("examples-for-tests");
    BUILD.call_once(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "-q",
                "-p",
                "simple-fastcgi-examples",
                "--bins",
                "--target-dir",
            ])
            .arg(&nested)
            .status()
            .expect("run cargo build for the examples");
        assert!(status.success(), "building the examples failed");
    });
    let path = nested.join("debug").join(name);
    assert!(path.exists(), "example binary {} missing", path.display());
    path
}

/// Whether `bin` exists and is newer than every source file of the
/// crates the examples are built from, as cargo would find it.
fn is_fresh(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let mut newest = None;
    for file in ["Cargo.toml", "Cargo.lock"] {
        newest_in(&root.join(file), &mut newest);
    }
    for krate in ["core", "runtime-std", "runtime-glommio", "examples"] {
        newest_in(&root.join(krate).join("Cargo.toml"), &mut newest);
        newest_in(&root.join(krate).join("src"), &mut newest);
    }
    newest.is_none_or(|source| source <= built)
}

/// Raises `newest` to the modification time of `path`, or of the newest
/// file under it.
fn newest_in(path: &Path, newest: &mut Option<std::time::SystemTime>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            newest_in(&entry.path(), newest);
        }
    } else if let Ok(modified) = meta.modified() {
        if newest.is_none_or(|n| modified > n) {
            *newest = Some(modified);
        }
    }
}

/// `target/debug` (or `release`): the directory holding the test binary's
/// `deps` folder.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("target dir").to_path_buf()
}

impl App {
    /// Starts example `name` with a listening socket on its fd 0, as
    /// `spawn-fcgi` does, with extra environment variables.
    pub fn spawn(name: &str, transport: Transport, env: &[(&str, &str)]) -> App {
        App::spawn_limited(name, transport, env, None)
    }

    /// [`App::spawn`], with the open-file limit (`ulimit -n`) set to
    /// `max_files` when given.
    pub fn spawn_limited(
        name: &str,
        transport: Transport,
        env: &[(&str, &str)],
        max_files: Option<u32>,
    ) -> App {
        App::spawn_bin(&example_bin(name), &[], transport, env, max_files)
    }

    /// [`App::spawn_limited`] for any FastCGI program at `bin`, run with
    /// `args`, that serves the listening socket on its fd 0 (the benchmark
    /// servers, say).
    pub fn spawn_bin(
        bin: &Path,
        args: &[&str],
        transport: Transport,
        env: &[(&str, &str)],
        max_files: Option<u32>,
    ) -> App {
        let name = bin
            .file_name()
            .map_or_else(|| "app".into(), |n| n.to_string_lossy().into_owned());
        let (fd, addr, dir): (OwnedFd, Addr, Option<TempDir>) = match transport {
            Transport::Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
                let addr = listener.local_addr().expect("addr").to_string();
                (listener.into(), Addr::Tcp(addr), None)
            }
            Transport::Unix => {
                let dir = TempDir::new(&name);
                let path = dir.path().join("app.sock");
                let listener = UnixListener::bind(&path).expect("bind unix");
                (listener.into(), Addr::Unix(path), Some(dir))
            }
        };
        let mut command = match max_files {
            None => Command::new(bin),
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(bin);
                shell
            }
        };
        command.args(args);
        command
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn example");
        App {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `USR1`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its resident set size in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::other("no VmRSS line"))
    }

    /// CPU time (user and system) the process has used so far.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (which may hold spaces), which ends
        // at the last ')': utime and stime are fields 14 and 15 of the line.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| io::Error::other("no ')' in /proc/PID/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> io::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| io::Error::other("short /proc/PID/stat"))
        };
        // `rest` starts at field 3 (state): utime is field 14, index 11.
        let total = ticks(11)? + ticks(12)?;
        // USER_HZ is 100 on Linux.
        Ok(Duration::from_millis(total * 10))
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
