//! The seed's example 2, as its README describes it, on the glommio runtime:
//! the entries of `DOCUMENT_ROOT` joined with the `path` query parameter,
//! streamed as NDJSON from an async stream (each line flushed as it is
//! made), `404` on any error. The path cannot leave the document root: `..`
//! is refused, and so is a symlink that resolves outside it.

use std::path::Path;
use std::process::ExitCode;

use futures_lite::stream;
use simple_fastcgi_examples::{listing, query_param};
use simple_fastcgi_glommio::{Chunks, Request};

fn main() -> ExitCode {
    simple_fastcgi_examples::serve_async(|| {
        async |req: &mut Request<'_>| {
            let dir = req
                .param("DOCUMENT_ROOT")
                .zip(req.param("QUERY_STRING"))
                .and_then(|(root, query)| {
                    listing::resolve(Path::new(root), &query_param(query, "path")?)
                });
            match dir.and_then(|dir| std::fs::read_dir(dir).ok()) {
                Some(entries) => {
                    let lines = stream::iter(
                        entries.filter_map(|entry| entry.ok().and_then(|e| listing::line(&e))),
                    );
                    req.send_response(200, "application/x-ndjson", Chunks(lines), &[], true)
                        .await
                }
                None => req.send_response(404, "", (), &[], true).await,
            }
        }
    })
}
