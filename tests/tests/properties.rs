//! Property tests of the core: encode-then-parse round trips for headers,
//! name-value pairs and whole requests, and chunking invariance: any split
//! of a valid byte stream gives the same events and replies as feeding it
//! whole.

use std::collections::HashMap;

use proptest::prelude::*;
use simple_fastcgi_core::{
    BeginRequestBody, Config, Connection, EndRequestBody, Event, Header, NameValue, Output, Params,
    ProtocolStatus, Record, RecordType, Role,
};
use simple_fastcgi_tests::wire::{Wire, encode_pairs};

/// An event with its bytes owned, so sequences can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Begin(u16, Role, bool),
    Params(u16, Vec<u8>),
    ParamsEnd(u16),
    Stdin(u16, Vec<u8>),
    StdinEnd(u16),
    Data(u16, Vec<u8>),
    DataEnd(u16),
    Abort(u16),
}

/// Everything a connection said about an input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Transcript {
    events: Vec<Seen>,
    output: Vec<u8>,
}

/// Feeds `chunks` the way a runtime does (unconsumed bytes kept, new bytes
/// appended), ends each request when its last input stream ends, and merges
/// adjacent chunks of one stream so that transcripts compare by content.
fn drive<'a>(conn: &mut Connection<8>, chunks: impl IntoIterator<Item = &'a [u8]>) -> Transcript {
    let mut transcript = Transcript::default();
    let mut outputs: HashMap<u16, (Role, Output)> = HashMap::new();
    let mut buffer: Vec<u8> = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            let progress = conn.feed(&buffer).expect("valid input");
            let consumed = progress.consumed;
            let idle = consumed == 0 && progress.event.is_none();
            let mut finished = None;
            if let Some(event) = progress.event {
                let seen = match event {
                    Event::Begin {
                        request_id,
                        role,
                        keep_conn,
                        output,
                    } => {
                        outputs.insert(request_id, (role, output));
                        Seen::Begin(request_id, role, keep_conn)
                    }
                    Event::Params { request_id, bytes } => Seen::Params(request_id, bytes.to_vec()),
                    Event::ParamsEnd { request_id } => Seen::ParamsEnd(request_id),
                    Event::Stdin { request_id, bytes } => Seen::Stdin(request_id, bytes.to_vec()),
                    Event::StdinEnd { request_id } => {
                        if outputs
                            .get(&request_id)
                            .is_some_and(|(role, _)| *role != Role::Filter)
                        {
                            finished = Some(request_id);
                        }
                        Seen::StdinEnd(request_id)
                    }
                    Event::Data { request_id, bytes } => Seen::Data(request_id, bytes.to_vec()),
                    Event::DataEnd { request_id } => {
                        finished = Some(request_id);
                        Seen::DataEnd(request_id)
                    }
                    Event::Abort { request_id } => Seen::Abort(request_id),
                };
                push_merged(&mut transcript.events, seen);
            }
            transcript.output.extend_from_slice(conn.pending_output());
            let n = conn.pending_output().len();
            conn.advance_output(n);
            if let Some(request_id) = finished {
                let (_, output) = outputs.remove(&request_id).expect("begun");
                let end = conn.end_request(output, u32::from(request_id));
                transcript.output.extend_from_slice(end.as_bytes());
            }
            buffer.drain(..consumed);
            if idle {
                break;
            }
        }
    }
    transcript
}

fn push_merged(events: &mut Vec<Seen>, seen: Seen) {
    match (events.last_mut(), &seen) {
        (Some(Seen::Params(a, bytes)), Seen::Params(b, more))
        | (Some(Seen::Stdin(a, bytes)), Seen::Stdin(b, more))
        | (Some(Seen::Data(a, bytes)), Seen::Data(b, more))
            if a == b =>
        {
            bytes.extend_from_slice(more)
        }
        _ => events.push(seen),
    }
}

fn multiplexing() -> Connection<8> {
    Connection::new(Config {
        max_conns: 4,
        max_reqs: 8,
        multiplex: true,
        max_reqs_per_conn: 8,
    })
}

/// A request as a web server would send it.
#[derive(Debug, Clone)]
struct Request {
    role: Role,
    keep_conn: bool,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    params_record: usize,
    stdin: Vec<u8>,
    stdin_record: usize,
    data: Vec<u8>,
    padding: u8,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![
            Just(Role::Responder),
            Just(Role::Authorizer),
            Just(Role::Filter)
        ],
        any::<bool>(),
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 1..40),
                prop::collection::vec(any::<u8>(), 0..300),
            ),
            0..12,
        ),
        1usize..200,
        prop::collection::vec(any::<u8>(), 0..3000),
        1usize..2000,
        prop::collection::vec(any::<u8>(), 0..500),
        any::<u8>(),
    )
        .prop_map(
            |(role, keep_conn, params, params_record, stdin, stdin_record, data, padding)| {
                Request {
                    role,
                    keep_conn,
                    params,
                    params_record,
                    stdin,
                    stdin_record,
                    data: if role == Role::Filter {
                        data
                    } else {
                        Vec::new()
                    },
                    padding,
                }
            },
        )
}

impl Request {
    fn encode(&self, request_id: u16, wire: Wire) -> Wire {
        let pairs = encode_pairs(self.params.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut wire = wire.begin(request_id, self.role, self.keep_conn);
        for piece in pairs.chunks(self.params_record) {
            wire = wire.record_padded(RecordType::Params, request_id, piece, self.padding);
        }
        wire = wire.record(RecordType::Params, request_id, b"");
        wire = wire.stream(
            RecordType::Stdin,
            request_id,
            &self.stdin,
            self.stdin_record,
        );
        if self.role == Role::Filter {
            wire = wire.stream(RecordType::Data, request_id, &self.data, 7);
        }
        wire
    }
}

/// Splits `bytes` at the given cut points (taken modulo its length).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

proptest! {
    #[test]
    fn header_round_trip(version: u8, kind: u8, request_id: u16, content_length: u16, padding_length: u8) {
        let header = Header {
            version,
            record_type: RecordType::from(kind),
            request_id,
            content_length,
            padding_length,
        };
        let bytes = header.to_bytes();
        let (rest, parsed) = Header::parse(&bytes).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(parsed, header);
        let mut out = [0u8; 8];
        prop_assert_eq!(header.encode(&mut out), Ok(8));
        prop_assert_eq!(out, bytes);
    }

    #[test]
    fn record_round_trip(kind: u8, request_id: u16, content in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut out = vec![0u8; content.len() + 16];
        let n = Record::encode(RecordType::from(kind), request_id, &content, &mut out).unwrap();
        prop_assert_eq!(n % 8, 0);
        let (rest, record) = Record::parse(&out[..n]).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(record.content, &content[..]);
        prop_assert_eq!(record.header.record_len(), n);
    }

    #[test]
    fn bodies_round_trip(role: u16, flags: u8, app_status: u32, status: u8) {
        let begin = BeginRequestBody { role: Role::from(role), flags };
        prop_assert_eq!(BeginRequestBody::parse(&begin.to_bytes()).unwrap().1, begin);
        let end = EndRequestBody { app_status, protocol_status: ProtocolStatus::from(status) };
        prop_assert_eq!(EndRequestBody::parse(&end.to_bytes()).unwrap().1, end);
    }

    #[test]
    fn name_value_round_trip(
        name in prop::collection::vec(any::<u8>(), 0..400),
        value in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let pair = NameValue::new(&name, &value);
        let mut out = vec![0u8; pair.encoded_len()];
        prop_assert_eq!(pair.encode(&mut out), Ok(out.len()));
        let (rest, parsed) = NameValue::parse(&out).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(parsed, pair);
        // Every strict prefix is incomplete, never an error or a wrong pair.
        for cut in [0, 1, out.len() / 2, out.len() - 1] {
            prop_assert!(matches!(NameValue::parse(&out[..cut]), Err(simple_fastcgi_core::nom::Err::Incomplete(_))));
        }
    }

    #[test]
    fn params_from_any_split(
        pairs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 1..60), prop::collection::vec(any::<u8>(), 0..200)),
            0..20,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let wire = encode_pairs(pairs.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut params: Box<Params<8192, 32>> = Box::default();
        for piece in split(&wire, &cuts) {
            params.feed(piece).unwrap();
        }
        params.finish().unwrap();
        let got: Vec<(Vec<u8>, Vec<u8>)> = params.iter().map(|p| (p.name.to_vec(), p.value.to_vec())).collect();
        prop_assert_eq!(&got, &pairs);
        for (name, _) in &pairs {
            let last = pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| &v[..]);
            prop_assert_eq!(params.get(name), last);
        }
    }

    #[test]
    fn whole_requests_round_trip(requests in prop::collection::vec(request(), 1..4)) {
        // Requests one after another on a keep-conn connection.
        let mut wire = Wire::new();
        for (id, request) in (1u16..).zip(&requests) {
            let mut request = request.clone();
            request.keep_conn = true;
            wire = request.encode(id, wire);
        }
        let mut conn = multiplexing();
        let transcript = drive(&mut conn, [wire.as_bytes()]);
        let mut expected = Vec::new();
        for (id, request) in (1u16..).zip(&requests) {
            expected.push(Seen::Begin(id, request.role, true));
            let pairs = encode_pairs(request.params.iter().map(|(n, v)| (&n[..], &v[..])));
            if !pairs.is_empty() {
                expected.push(Seen::Params(id, pairs));
            }
            expected.push(Seen::ParamsEnd(id));
            if !request.stdin.is_empty() {
                expected.push(Seen::Stdin(id, request.stdin.clone()));
            }
            expected.push(Seen::StdinEnd(id));
            if request.role == Role::Filter {
                if !request.data.is_empty() {
                    expected.push(Seen::Data(id, request.data.clone()));
                }
                expected.push(Seen::DataEnd(id));
            }
        }
        prop_assert_eq!(transcript.events, expected);
        // Each request got exactly one ending, in order.
        let mut rest = &transcript.output[..];
        for id in (1u16..).take(requests.len()) {
            let (after, stdout) = Record::parse(rest).unwrap();
            prop_assert_eq!(stdout.header.record_type, RecordType::Stdout);
            let (after, end) = Record::parse(after).unwrap();
            prop_assert_eq!(end.header.record_type, RecordType::EndRequest);
            prop_assert_eq!(end.header.request_id, id);
            rest = after;
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn any_split_gives_the_same_transcript(
        requests in prop::collection::vec(request(), 1..4),
        interleave in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        // Management records between requests, requests multiplexed or not.
        let mut wire = Wire::new().get_values(&["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS", "OTHER"]);
        if interleave {
            let encoded: Vec<Vec<u8>> = requests
                .iter()
                .zip(1u16..)
                .map(|(r, id)| r.encode(id, Wire::new()).into_bytes())
                .collect();
            // Whole records of each request, round-robin.
            let mut cursors: Vec<&[u8]> = encoded.iter().map(|e| &e[..]).collect();
            while cursors.iter().any(|c| !c.is_empty()) {
                for cursor in cursors.iter_mut().filter(|c| !c.is_empty()) {
                    let (rest, _) = Record::parse(cursor).unwrap();
                    let len = cursor.len() - rest.len();
                    wire = wire.raw(&cursor[..len]);
                    *cursor = rest;
                }
            }
        } else {
            for (id, request) in (1u16..).zip(&requests) {
                let mut request = request.clone();
                request.keep_conn = true;
                wire = request.encode(id, wire);
                wire = wire.record(RecordType::Unknown(0x42), 0, b"mgmt");
            }
        }
        let whole = drive(&mut multiplexing(), [wire.as_bytes()]);
        let pieces = drive(&mut multiplexing(), split(wire.as_bytes(), &cuts));
        prop_assert_eq!(&pieces, &whole);
        let bytes = drive(&mut multiplexing(), wire.as_bytes().chunks(1));
        prop_assert_eq!(&bytes, &whole);
    }
}
