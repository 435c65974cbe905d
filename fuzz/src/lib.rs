//! The fuzz harnesses, one function per target. They depend on the core,
//! the std runtime and std only, so the stable replay test in `tests/`
//! includes this file and runs every committed corpus entry through the
//! same checks.
//!
//! A harness panics only when the core breaks a promise: a parse result that
//! contradicts its input, an event for a request that is not active, an
//! abort reported twice, a reply that is not whole records, or a feed loop
//! that stops making progress.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use simple_fastcgi_core::nom::{Err, Needed};
use simple_fastcgi_core::{
    BeginRequestBody, Config, Connection, EndRequestBody, Event, HEADER_LEN, Header, NameValue,
    Output, Params, ParamsError, Record, UnknownTypeBody,
};

/// The record parser and the discrete bodies.
pub fn record(data: &[u8]) {
    match Record::parse(data) {
        Ok((rest, record)) => {
            let header = record.header;
            assert_eq!(record.content.len(), usize::from(header.content_length));
            assert_eq!(data.len() - rest.len(), header.record_len());
            assert_eq!(
                &header.to_bytes()[..7],
                &data[..7],
                "re-encoding gives the same header"
            );
        }
        Err(Err::Incomplete(Needed::Size(needed))) => {
            assert!(data.len() + needed.get() <= HEADER_LEN + 0xffff + 0xff);
            if data.len() >= HEADER_LEN {
                let (_, header) = Header::parse(data).expect("eight bytes are a header");
                assert!(data.len() < header.record_len());
            }
        }
        Err(other) => panic!("streaming record parse failed: {other:?}"),
    }
    let _ = BeginRequestBody::parse(data);
    let _ = EndRequestBody::parse(data);
    let _ = UnknownTypeBody::parse(data);
}

/// Name-value pairs: the contiguous parser, and `Params` fed the same bytes
/// in pieces whose sizes come from the first byte.
pub fn name_value(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece % 64) + 1;

    // Contiguous parse of every whole pair.
    let mut pairs: Vec<NameValue<'_>> = Vec::new();
    let mut rest = stream;
    let truncated = loop {
        if rest.is_empty() {
            break false;
        }
        match NameValue::parse(rest) {
            Ok((after, pair)) => {
                assert!(after.len() < rest.len(), "a pair takes at least two bytes");
                let mut encoded = vec![0u8; pair.encoded_len()];
                assert_eq!(pair.encode(&mut encoded), Ok(encoded.len()));
                assert_eq!(NameValue::parse(&encoded), Ok((&[][..], pair)));
                pairs.push(pair);
                rest = after;
            }
            Err(Err::Incomplete(_)) => break true,
            Err(other) => panic!("streaming pair parse failed: {other:?}"),
        }
    };

    let mut params: Box<Params<4096, 32>> = Box::default();
    let mut result = Ok(());
    for chunk in stream.chunks(piece) {
        result = params.feed(chunk);
        if result.is_err() {
            break;
        }
    }
    let result = result.and_then(|()| params.finish());
    match result {
        Ok(()) => {
            assert!(!truncated);
            assert_eq!(params.len(), pairs.len());
            for (stored, parsed) in params.iter().zip(&pairs) {
                assert_eq!(stored, *parsed);
            }
        }
        Err(ParamsError::Truncated) => assert!(truncated),
        Err(ParamsError::EmptyName) => {
            assert!(truncated || pairs.iter().any(|p| p.name.is_empty()))
        }
        Err(ParamsError::TooLarge { required, capacity }) => assert!(required > capacity),
        Err(ParamsError::TooMany { capacity }) => assert_eq!(capacity, 32),
        Err(other) => panic!("unexpected params error {other:?}"),
    }
}

/// The connection state machine fed arbitrary bytes in arbitrary pieces.
///
/// `data[0]`: bit 0 multiplexing, bit 1 end requests on abort, bit 2 end
/// requests as soon as their params end. `data[1]`: seed of the piece sizes.
/// The rest is the byte stream.
pub fn connection(data: &[u8]) {
    let [flags, seed, stream @ ..] = data else {
        return;
    };
    let config = Config {
        max_conns: 3,
        max_reqs: 9,
        multiplex: flags & 1 != 0,
        max_reqs_per_conn: 3,
    };
    let end_on_abort = flags & 2 != 0;
    let end_early = flags & 4 != 0;
    let mut conn: Connection<4> = Connection::new(config);
    let mut outputs: HashMap<u16, (Output, bool)> = HashMap::new();
    let mut rng = u32::from(*seed) | 1;
    let mut buffer: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut written: Vec<u8> = Vec::new();
    let mut steps = 0usize;

    'outer: while pos < stream.len() || !buffer.is_empty() {
        // xorshift: piece sizes from 1 to 64 bytes.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let take = (rng as usize % 64 + 1).min(stream.len() - pos);
        buffer.extend_from_slice(&stream[pos..pos + take]);
        pos += take;
        loop {
            steps += 1;
            assert!(
                steps <= 4 * stream.len() + 16,
                "feed stopped making progress"
            );
            let progress = match conn.feed(&buffer) {
                Ok(progress) => progress,
                Err(error) => {
                    assert!(conn.is_closed());
                    assert_eq!(conn.feed(&buffer), Err(error), "errors are final");
                    break 'outer;
                }
            };
            assert!(progress.consumed <= buffer.len());
            let consumed = progress.consumed;
            let idle = consumed == 0 && progress.event.is_none();
            let mut finish = None;
            match progress.event {
                Some(Event::Begin {
                    request_id, output, ..
                }) => {
                    assert_ne!(request_id, 0);
                    assert_eq!(output.request_id(), request_id);
                    assert!(
                        outputs.insert(request_id, (output, false)).is_none(),
                        "begun twice"
                    );
                    assert!(outputs.len() <= if config.multiplex { 3 } else { 1 });
                }
                Some(Event::Params { request_id, bytes })
                | Some(Event::Stdin { request_id, bytes })
                | Some(Event::Data { request_id, bytes }) => {
                    assert!(
                        outputs.contains_key(&request_id),
                        "chunk for inactive {request_id}"
                    );
                    assert!(!bytes.is_empty());
                }
                Some(Event::ParamsEnd { request_id }) => {
                    assert!(outputs.contains_key(&request_id));
                    if end_early {
                        finish = Some(request_id);
                    }
                }
                Some(Event::StdinEnd { request_id }) | Some(Event::DataEnd { request_id }) => {
                    assert!(outputs.contains_key(&request_id));
                    finish = Some(request_id);
                }
                Some(Event::Abort { request_id }) => {
                    let (_, aborted) = outputs
                        .get_mut(&request_id)
                        .expect("abort for an active request");
                    assert!(!*aborted, "abort reported twice");
                    *aborted = true;
                    if end_on_abort {
                        finish = Some(request_id);
                    }
                }
                None => {}
            }
            written.extend_from_slice(conn.pending_output());
            let n = conn.pending_output().len();
            conn.advance_output(n);
            if let Some(request_id) = finish {
                let (mut output, _) = outputs.remove(&request_id).expect("active");
                for frame in output.stdout(b"Status: 200 OK\r\n\r\nok") {
                    for part in frame.parts() {
                        written.extend_from_slice(part);
                    }
                }
                let end = conn.end_request(output, 0);
                assert!(!conn.is_active(request_id));
                written.extend_from_slice(end.as_bytes());
                if end.close_connection() {
                    assert!(conn.is_closed());
                }
            }
            buffer.drain(..consumed);
            if conn.is_closed() {
                break 'outer;
            }
            if idle {
                break;
            }
        }
        if pos == stream.len() {
            // The peer closed; whatever is left is a partial record.
            break;
        }
    }
    // Everything written is whole records.
    let mut rest = &written[..];
    while !rest.is_empty() {
        let (after, _) = Record::parse(rest).expect("output is whole records");
        rest = after;
    }
}

/// The most input the `request` harness feeds: its replies must fit in the
/// socket buffer, since it reads them only after the runtime is done.
const REQUEST_INPUT_MAX: usize = 32 * 1024;

/// Whole conversations through the std runtime's request handling, in
/// memory (a socket pair): the input is what a web server sends, then its
/// end. A handler reads the params, the body and any filter data, and
/// answers. What the runtime sends back must be whole version-1 records of
/// the types an application sends, with one END_REQUEST per request that
/// got any reply, and nothing for a request after its END_REQUEST until it
/// begins again. A panic in the runtime, or a hang (the fuzzer's timeout),
/// is a finding.
pub fn request(data: &[u8]) {
    use simple_fastcgi_core::RecordType;
    use simple_fastcgi_std::{Request, Settings};

    if data.len() > REQUEST_INPUT_MAX {
        return;
    }
    let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
    theirs
        .write_all(data)
        .expect("the input fits in the socket buffer");
    theirs.shutdown(Shutdown::Write).expect("end of input");
    let settings = Settings {
        handle_signals: false,
        read_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        lingering_close: Duration::from_millis(10),
        ..Settings::default()
    };
    let handler = |req: &mut Request<'_>| {
        let pairs = req.environ().iter().count();
        let uri = req.param("REQUEST_URI").unwrap_or("").len();
        let body = std::io::copy(req, &mut std::io::sink())?;
        let data = std::io::copy(&mut req.data(), &mut std::io::sink())?;
        let text = format!("{pairs} {uri} {body} {data}");
        req.send_response(200, "text/plain", text, &[("X-Fuzz", "yes")], false)
    };
    simple_fastcgi_std::serve_one_connection(ours, &handler, settings)
        .expect("setting up the connection");
    let mut out = Vec::new();
    theirs.read_to_end(&mut out).expect("the replies");

    // The std runtime serves one request at a time: its replies are
    // management records (request id 0) and, for one request after
    // another, STDOUT and STDERR records, STDOUT's empty end record at most
    // once, then END_REQUEST.
    let mut current: Option<(u16, bool)> = None;
    let mut rest = &out[..];
    while !rest.is_empty() {
        let (after, record) = match Record::parse(rest) {
            Ok(parsed) => parsed,
            Err(error) => panic!("the runtime sent a partial or bad record: {error:?}"),
        };
        assert_eq!(record.header.version, 1);
        let id = record.header.request_id;
        match record.header.record_type {
            RecordType::GetValuesResult | RecordType::UnknownType => assert_eq!(id, 0),
            RecordType::Stdout | RecordType::Stderr => {
                assert!(id != 0, "output for request 0");
                let (open, stdout_ended) = current.get_or_insert((id, false));
                assert_eq!(*open, id, "replies to two requests interleaved");
                if record.header.record_type == RecordType::Stdout {
                    assert!(!*stdout_ended, "STDOUT after its end record");
                    *stdout_ended = record.content.is_empty();
                }
            }
            RecordType::EndRequest => {
                assert!(id != 0, "END_REQUEST for request 0");
                assert_eq!(record.content.len(), 8);
                if let Some((open, _)) = current {
                    assert_eq!(open, id, "END_REQUEST for another request");
                }
                current = None;
            }
            other => panic!("the runtime sent a {other:?} record"),
        }
        rest = after;
    }
}
