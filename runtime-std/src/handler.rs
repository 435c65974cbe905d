//! What the application implements.

use std::io;

use crate::request::Request;

/// Serves requests: the Rust form of the seed's `FcgiHandler.handle()`.
///
/// One handler is shared by all worker threads, so it is `Send + Sync`.
/// Plain closures are handlers too:
///
/// ```no_run
/// use simple_fastcgi_std::{Request, Server};
///
/// let server = Server::new(|req: &mut Request<'_>| {
///     req.send_response(200, "text/plain", "Hello, world!", &[], false)
/// })?;
/// server.serve_forever()
/// # ; Ok::<(), std::io::Error>(())
/// ```
///
/// Returning an error, or panicking, ends the request with a non-zero app
/// status and a line on stderr; when no response bytes were sent yet, the
/// client gets `500 Internal Server Error`. The server keeps serving.
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()>;

    /// Called by `serve_forever` at least every
    /// [`Settings::service_interval`](crate::Settings::service_interval), on
    /// the thread that runs it (the seed's `service_actions`). Does nothing
    /// by default.
    fn service_actions(&self) {}
}

impl<F> Handler for F
where
    F: Fn(&mut Request<'_>) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        self(req)
    }
}
