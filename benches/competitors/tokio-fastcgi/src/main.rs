//! "Hello, world!" with tokio-fastcgi, for the comparison in
//! benches/compare.sh: it serves the listening Unix socket on fd 0, as
//! spawn-fcgi passes it (`spawn-fcgi -n -s /tmp/tokio.sock -- ./tokio-fastcgi-hello`).

use std::os::fd::FromRawFd;

use tokio::net::UnixListener;
use tokio_fastcgi::{RequestResult, Requests};

const BODY: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!";

#[tokio::main]
async fn main() {
    // SAFETY: fd 0 is the listening socket spawn-fcgi passed; nothing else
    // in this process uses it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(0) };
    // A tty or a pipe on fd 0 would make every accept fail at once.
    listener
        .local_addr()
        .expect("fd 0 is not a listening Unix socket: start this with spawn-fcgi");
    listener
        .set_nonblocking(true)
        .expect("fd 0 is not a listening Unix socket: start this with spawn-fcgi");
    let listener = UnixListener::from_std(listener).expect("fd 0 is not a listening Unix socket");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut requests = Requests::from_split_socket(stream.split(), 64, 64);
            while let Ok(Some(request)) = requests.next().await {
                let result = request
                    .process(|request| async move {
                        let mut stdout = request.get_stdout();
                        if stdout.write(BODY).await.is_err() {
                            return RequestResult::Complete(1);
                        }
                        RequestResult::Complete(0)
                    })
                    .await;
                if result.is_err() {
                    break;
                }
            }
        });
    }
}
