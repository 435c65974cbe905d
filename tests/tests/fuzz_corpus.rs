//! Replays every committed fuzz corpus entry (seeds and cases the fuzzers
//! found) through the fuzz harnesses on stable Rust, so a fixed crash stays
//! fixed without nightly or cargo-fuzz.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code, unreachable_pub, reason = "shared with the fuzz crate")]
mod harness;

use std::fs;
use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display())) {
        let path = entry.expect("corpus entry").path();
        let data = fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} failed its harness", path.display());
        count += 1;
    }
    assert!(count > 0, "no corpus in {}", folder.display());
}

#[test]
fn record_corpus() {
    replay("record", harness::record);
}

#[test]
fn name_value_corpus() {
    replay("name_value", harness::name_value);
}

#[test]
fn connection_corpus() {
    replay("connection", harness::connection);
}

#[test]
fn request_corpus() {
    replay("request", harness::request);
}
