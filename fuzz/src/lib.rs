//! The fuzz harnesses, one function per target. They depend on nothing but
//! the core and std, so the stable replay test in `tests/` includes this file
//! and runs every committed corpus entry through the same checks.
//!
//! A harness panics only when the core breaks a promise: a parse result that
//! contradicts its input, an event for a request that is not active, an
//! abort reported twice, a reply that is not whole records, or a feed loop
//! that stops making progress.

use std::collections::HashMap;

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
