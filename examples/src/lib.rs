//! Shared bits of the example apps: how they start, and query strings.
//!
//! Every example serves on fd 0 when started by a web server or
//! `spawn-fcgi`, runs once as a CGI program when fd 0 is not a socket, and
//! listens on an address when given one:
//!
//! ```sh
//! cargo run -p simple-fastcgi-examples --bin hello -- 127.0.0.1:9000
//! REQUEST_METHOD=GET QUERY_STRING=a=1 cargo run -p simple-fastcgi-examples --bin echo
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::process::ExitCode;

use simple_fastcgi_glommio::AsyncServer;
use simple_fastcgi_std::{Handler, Server};

/// Serves `handler` on the address given as the first argument, or on fd 0
/// (or as CGI) without one. Returns the process's exit code.
pub fn serve<H: Handler>(handler: H) -> ExitCode {
    let server = match address_arg() {
        Err(help) => return help,
        Ok(Some(addr)) => Server::bind(&addr, handler),
        Ok(None) => Server::new(handler),
    };
    exit_code(server.and_then(|server| {
        if !server.is_cgi() {
            eprintln!(
                "{}: serving FastCGI on {}",
                program(),
                server.handle().local_addr()
            );
        }
        server.serve_forever()
    }))
}

/// Serves async handlers made by `factory` on the glommio runtime: on the
/// address given as the first argument, or on fd 0 without one.
pub fn serve_async<F, H>(factory: F) -> ExitCode
where
    F: Fn() -> H + Send + Sync + 'static,
    H: simple_fastcgi_glommio::Handler,
{
    let server = match address_arg() {
        Err(help) => return help,
        Ok(Some(addr)) => AsyncServer::bind(&addr, factory),
        Ok(None) => AsyncServer::new(factory),
    };
    exit_code(server.and_then(|server| {
        eprintln!(
            "{}: serving FastCGI on {} with {} executor(s)",
            program(),
            server.handle().local_addr(),
            server.settings().executors
        );
        server.run()
    }))
}

/// The address argument, if any; `Err` (with the exit code) once the usage
/// was printed for `-h` or `--help`.
fn address_arg() -> Result<Option<String>, ExitCode> {
    match std::env::args().nth(1) {
        Some(arg) if arg == "-h" || arg == "--help" => {
            eprintln!(
                "usage: {} [ADDRESS]  (host:port or a Unix socket path; default: fd 0)",
                program()
            );
            Err(ExitCode::SUCCESS)
        }
        addr => Ok(addr),
    }
}

/// The exit code for how serving ended, with the error printed.
fn exit_code(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", program());
            ExitCode::FAILURE
        }
    }
}

fn program() -> String {
    std::env::args()
        .next()
        .and_then(|path| path.rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| "example".to_string())
}

/// The first value of `name` in a query string (`a=1&path=%2Fx`), decoded
/// (`+` is a space, `%XX` a byte); `None` if absent or not UTF-8.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key)? == name {
            percent_decode(value)
        } else {
            None
        }
    })
}

/// Decodes `+` and `%XX` escapes; `None` for a bad escape or non-UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The seed's example 2, shared by `dir-listing` and `dir-listing-sync`:
/// directory entries as NDJSON lines under a document root.
pub mod listing {
    use std::fs;
    use std::path::{Component, Path, PathBuf};
    use std::time::UNIX_EPOCH;

    use serde_json::{Map, Value, json};

    /// `root/path`, if it is a directory inside `root`. `..` components are
    /// refused, and the resolved directory (symlinks followed) must lie
    /// inside the resolved root, so a symlink pointing outside the root is
    /// refused too. A leading `/` means the root itself.
    pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
        let relative = Path::new(path.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return None;
        }
        let root = root.canonicalize().ok()?;
        let dir = root.join(relative).canonicalize().ok()?;
        (dir.starts_with(&root) && dir.is_dir()).then_some(dir)
    }

    /// One NDJSON line for a directory entry:
    /// `{"name":..,"type":"dir"|"file","size":..,"mtime":..}` (`mtime` in
    /// milliseconds); `None` for entries that are neither files nor
    /// directories. Size and mtime are left out when they cannot be read.
    pub fn line(entry: &fs::DirEntry) -> Option<String> {
        let mut record = Map::new();
        record.insert(
            "name".into(),
            Value::String(entry.file_name().to_string_lossy().into_owned()),
        );
        let kind = entry.file_type().ok()?;
        let kind = if kind.is_dir() {
            "dir"
        } else if kind.is_file() {
            "file"
        } else {
            return None;
        };
        record.insert("type".into(), json!(kind));
        if let Ok(meta) = entry.metadata() {
            record.insert("size".into(), json!(meta.len()));
            if let Some(since) = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            {
                record.insert(
                    "mtime".into(),
                    json!(u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
                );
            }
        }
        let mut line = serde_json::to_string(&record).ok()?;
        line.push('\n');
        Some(line)
    }
}

/// Bytes kept in memory up to a limit and in an unlinked temporary file
/// beyond it: a request body of any size, without holding it all in memory.
pub struct Spool {
    memory: Vec<u8>,
    limit: usize,
    file: Option<File>,
}

impl Spool {
    /// An empty spool that keeps up to `limit` bytes in memory.
    pub fn new(limit: usize) -> Spool {
        Spool {
            memory: Vec::new(),
            limit,
            file: None,
        }
    }

    /// Writes everything spooled to `out`.
    pub fn copy_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.memory)?;
        if let Some(file) = &mut self.file {
            file.rewind()?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
        }
        Ok(())
    }

    /// A reader over everything spooled, from the start.
    pub fn reader(&mut self) -> io::Result<impl Read + '_> {
        if let Some(file) = &mut self.file {
            file.rewind()?;
        }
        let file: Box<dyn Read + '_> = match &mut self.file {
            Some(file) => Box::new(file),
            None => Box::new(io::empty()),
        };
        Ok(io::Cursor::new(&self.memory[..]).chain(file))
    }

    fn spill_file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("sfcgi-spool-{}-{n}", std::process::id()));
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            // Unlinked at once: the space is freed when the file is closed.
            std::fs::remove_file(&path)?;
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("spool file"))
    }
}

impl Write for Spool {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + data.len() <= self.limit {
            self.memory.extend_from_slice(data);
        } else {
            self.spill_file()?.write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_spills_to_a_file() {
        let mut spool = Spool::new(10);
        spool.write_all(b"0123456789").unwrap();
        assert!(spool.file.is_none());
        spool.write_all(b"abc").unwrap();
        spool.write_all(b"def").unwrap();
        assert!(spool.file.is_some());
        let mut out = Vec::new();
        spool.copy_to(&mut out).unwrap();
        assert_eq!(out, b"0123456789abcdef");
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("a=1&path=%2Fsub%20dir&b", "path").as_deref(),
            Some("/sub dir")
        );
        assert_eq!(query_param("path=a+b", "path").as_deref(), Some("a b"));
        assert_eq!(query_param("x=1", "path"), None);
        assert_eq!(query_param("path", "path").as_deref(), Some(""));
        assert_eq!(query_param("path=%zz", "path"), None);
        assert_eq!(query_param("path=%e2%82%ac", "path").as_deref(), Some("€"));
    }
}
