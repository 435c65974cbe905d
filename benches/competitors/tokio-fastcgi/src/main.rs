//! "Hello, world!" with tokio-fastcgi on the Unix socket given as the first
//! argument, for the comparison in benches/compare.sh.

use tokio::net::UnixListener;
use tokio_fastcgi::{RequestResult, Requests};

const BODY: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, world!";

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: tokio-fastcgi-hello SOCKET");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
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
