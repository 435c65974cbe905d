//! Criterion benches of the core: parsing the request nginx sends (about 20
//! params) and framing a 64 KiB response, reported as throughput.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simple_fastcgi_core::{Config, Connection, Event, Output, Params};
use simple_fastcgi_tests::wire::nginx_request;

/// Feeds one whole request; returns the number of params and body bytes.
fn parse(conn: &mut Connection, params: &mut Params, input: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    let mut body = 0;
    let mut output = None;
    loop {
        let progress = conn.feed(&input[pos..]).expect("valid request");
        pos += progress.consumed;
        match progress.event {
            Some(Event::Begin { output: out, .. }) => {
                params.clear();
                output = Some(out);
            }
            Some(Event::Params { bytes, .. }) => params.feed(bytes).expect("fits"),
            Some(Event::ParamsEnd { .. }) => params.finish().expect("complete"),
            Some(Event::Stdin { bytes, .. }) => body += bytes.len(),
            Some(Event::StdinEnd { .. }) => {
                let output: Output = output.take().expect("begun");
                let end = conn.end_request(output, 0);
                black_box(end.as_bytes());
                return (params.len(), body);
            }
            Some(_) => {}
            None => panic!("request ended early"),
        }
    }
}

fn parse_nginx_request(c: &mut Criterion) {
    let input = nginx_request(1, b"");
    let mut conn: Connection = Connection::new(Config::new());
    let mut params: Box<Params> = Box::default();
    let mut group = c.benchmark_group("parse_nginx_request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("requests", |b| {
        b.iter(|| parse(&mut conn, &mut params, black_box(&input)))
    });
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| parse(&mut conn, &mut params, black_box(&input)))
    });
    group.finish();
}

fn frame_64k_response(c: &mut Criterion) {
    let payload = vec![b'x'; 64 * 1024];
    let mut out_buf = vec![0u8; 70 * 1024];
    let mut group = c.benchmark_group("frame_64k_response");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    // What a runtime does: header and padding beside the caller's slice.
    group.bench_function("vectored", |b| {
        b.iter(|| {
            let mut conn: Connection = Connection::new(Config::new());
            let mut output = begin(&mut conn);
            let mut total = 0;
            for frame in output.stdout(black_box(&payload)) {
                total += frame.parts().iter().map(|part| part.len()).sum::<usize>();
            }
            black_box(total);
            black_box(conn.end_request(output, 0));
        })
    });
    // Copying every record into one buffer, for runtimes without writev.
    group.bench_function("copied", |b| {
        b.iter(|| {
            let mut conn: Connection = Connection::new(Config::new());
            let mut output = begin(&mut conn);
            let mut at = 0;
            for frame in output.stdout(black_box(&payload)) {
                at += frame.encode(&mut out_buf[at..]).expect("sized");
            }
            black_box(&out_buf[..at]);
            black_box(conn.end_request(output, 0));
        })
    });
    group.finish();
}

/// A connection with one begun request; returns its output.
fn begin(conn: &mut Connection) -> Output {
    static BEGIN: [u8; 16] = [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0];
    match conn.feed(&BEGIN).expect("valid").event {
        Some(Event::Begin { output, .. }) => output,
        other => panic!("expected Begin, got {other:?}"),
    }
}

criterion_group!(benches, parse_nginx_request, frame_64k_response);
criterion_main!(benches);
