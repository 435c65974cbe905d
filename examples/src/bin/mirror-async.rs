//! Sends the request body back as `application/octet-stream`, of any size,
//! on the glommio runtime. As in `mirror`, the body is read whole first
//! (nginx stops sending a body once the response head went to the client),
//! in memory up to 1 MiB and in an unlinked temporary file beyond.

use std::io::Write;
use std::process::ExitCode;

use simple_fastcgi_examples::Spool;
use simple_fastcgi_glommio::Request;

fn main() -> ExitCode {
    simple_fastcgi_examples::serve_async(|| {
        async |req: &mut Request<'_>| {
            let mut body = Spool::new(1024 * 1024);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = req.read_into(&mut buf).await?;
                if n == 0 {
                    break;
                }
                body.write_all(&buf[..n])?;
            }
            req.send_response(200, "application/octet-stream", "", &[], false)
                .await?;
            let mut reader = body.reader()?;
            loop {
                let n = std::io::Read::read(&mut reader, &mut buf)?;
                if n == 0 {
                    return req.flush().await;
                }
                req.write(&buf[..n]).await?;
            }
        }
    })
}
