//! What the application implements.

use std::io;

use crate::request::Request;

/// Serves requests: the Rust form of the seed's `AsyncFcgiHandler`.
///
/// Each executor makes its own handler with the server's factory, so a
/// handler need not be `Send`. Async closures are handlers too:
///
/// ```no_run
/// use simple_fastcgi_glommio::{AsyncServer, Request};
///
/// let server = AsyncServer::new(|| async |req: &mut Request<'_>| {
///     req.send_response(200, "text/plain", "Hello, world!", &[], false).await
/// })?;
/// server.run()
/// # ; Ok::<(), std::io::Error>(())
/// ```
///
/// Returning an error, or panicking, ends the request with a non-zero app
/// status and a line on stderr; when no response bytes were sent yet, the
/// client gets `500 Internal Server Error`. The server keeps serving.
pub trait Handler: 'static {
    /// Serves one request.
    #[allow(
        async_fn_in_trait,
        reason = "handlers run on one executor: no Send bound is wanted"
    )]
    async fn handle(&self, req: &mut Request<'_>) -> io::Result<()>;
}

impl<F> Handler for F
where
    F: AsyncFn(&mut Request<'_>) -> io::Result<()> + 'static,
{
    async fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        self(req).await
    }
}
