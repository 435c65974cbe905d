//! Benchmarks for simple-fastcgi. `benches/core.rs` measures the core with
//! criterion (`cargo bench -p simple-fastcgi-benches`).
