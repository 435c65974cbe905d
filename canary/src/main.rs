//! The no_std canary: a bare-metal program that parses a whole nginx request
//! with the core and frames a response. It has no allocator and no std, so
//! it fails to link if the core (or a dependency) starts to need either.
//! `.ci/run` builds it for thumbv7em-none-eabihf and checks the symbols.

#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;

use simple_fastcgi_core::{http, Config, Connection, Event, Output, Params};

/// A conversation from the fuzz seed corpus (two control bytes, then what
/// nginx sends for two keep-conn POST requests).
static INPUT: &[u8] = include_bytes!("../../fuzz/corpus/connection/seed-nginx-keep-conn");

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    loop {}
}

/// The entry point the linker looks for; the program never returns.
// `no_mangle` keeps the symbol name the linker's default entry expects.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let input = black_box(&INPUT[2..]);
    let mut conn: Connection = Connection::new(Config::new());
    let mut params: Params<2048, 32> = Params::new();
    let mut output: Option<Output> = None;
    let mut written = 0usize;
    let mut pos = 0;
    while let Ok(progress) = conn.feed(&input[pos..]) {
        pos += progress.consumed;
        let idle = progress.consumed == 0 && progress.event.is_none();
        match progress.event {
            Some(Event::Begin { output: out, .. }) => {
                params.clear();
                output = Some(out);
            }
            Some(Event::Params { bytes, .. }) => {
                let _ = params.feed(bytes);
            }
            Some(Event::ParamsEnd { .. }) => {
                let _ = params.finish();
            }
            Some(Event::StdinEnd { .. }) => {
                if let Some(mut out) = output.take() {
                    let mut head = [0u8; 128];
                    let n = http::encode_head(&mut head, 200, "text/plain", &[]).unwrap_or(0);
                    let body = params.get("REQUEST_URI").unwrap_or(b"");
                    for part in [&head[..n], body] {
                        for frame in out.stdout(part) {
                            written += black_box(frame.parts()).iter().map(|p| p.len()).sum::<usize>();
                        }
                    }
                    written += black_box(conn.end_request(out, 0)).as_bytes().len();
                }
            }
            _ => {}
        }
        let n = conn.pending_output().len();
        conn.advance_output(n);
        if idle {
            break;
        }
    }
    black_box(written);
    loop {}
}
