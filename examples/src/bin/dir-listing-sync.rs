//! The seed's example 2 on the blocking runtime: lists the directory
//! `DOCUMENT_ROOT/<path>` (`path` from the query string) as NDJSON, one line
//! per entry, streamed: `{"name":..,"type":"dir"|"file","size":..,"mtime":..}`
//! (`mtime` in milliseconds). Errors answer `404`. The path cannot leave the
//! document root (see `listing::resolve`).

use std::path::Path;
use std::process::ExitCode;

use simple_fastcgi_examples::{listing, query_param};
use simple_fastcgi_std::{Chunks, Request};

fn main() -> ExitCode {
    simple_fastcgi_examples::serve(|req: &mut Request<'_>| {
        let dir = req
            .param("DOCUMENT_ROOT")
            .zip(req.param("QUERY_STRING"))
            .and_then(|(root, query)| {
                listing::resolve(Path::new(root), &query_param(query, "path")?)
            });
        match dir.and_then(|dir| std::fs::read_dir(dir).ok()) {
            Some(entries) => {
                let lines = entries.filter_map(|entry| entry.ok().and_then(|e| listing::line(&e)));
                req.send_response(200, "application/x-ndjson", Chunks(lines), &[], true)
            }
            None => req.send_response(404, "", (), &[], true),
        }
    })
}
