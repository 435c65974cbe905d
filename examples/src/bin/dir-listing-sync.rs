//! The seed's example 2 on the blocking runtime: lists the directory
//! `DOCUMENT_ROOT/<path>` (`path` from the query string) as NDJSON, one line
//! per entry, streamed: `{"name":..,"type":"dir"|"file","size":..,"mtime":..}`
//! (`mtime` in milliseconds). Errors answer `404`.
//!
//! The path stays inside the document root: `..` components are refused,
//! and the resolved directory (symlinks followed) must lie inside the
//! resolved root, so a symlink pointing outside the root is refused too.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use serde_json::{Map, Value, json};
use simple_fastcgi_examples::query_param;
use simple_fastcgi_std::{Chunks, Request};

fn main() -> ExitCode {
    simple_fastcgi_examples::serve(|req: &mut Request<'_>| {
        let dir = req
            .param("DOCUMENT_ROOT")
            .zip(req.param("QUERY_STRING"))
            .and_then(|(root, query)| resolve(Path::new(root), &query_param(query, "path")?));
        let entries = dir.and_then(|dir| fs::read_dir(dir).ok());
        match entries {
            Some(entries) => {
                let lines = entries.filter_map(|entry| entry.ok().and_then(|e| line(&e)));
                req.send_response(200, "application/x-ndjson", Chunks(lines), &[], true)
            }
            None => req.send_response(404, "", (), &[], true),
        }
    })
}

/// `root/path`, if it is a directory inside `root`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let dir = root.join(relative).canonicalize().ok()?;
    dir.starts_with(&root).then_some(dir)
}

/// One NDJSON line for a directory entry; `None` for entries that are
/// neither files nor directories.
fn line(entry: &fs::DirEntry) -> Option<String> {
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
        if let Some(ms) = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            record.insert(
                "mtime".into(),
                json!(u64::try_from(ms.as_millis()).unwrap_or(u64::MAX)),
            );
        }
    }
    let mut line = serde_json::to_string(&record)
        .map_err(io::Error::from)
        .ok()?;
    line.push('\n');
    Some(line)
}
