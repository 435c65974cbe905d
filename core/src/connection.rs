//! The sans-IO state machine for one transport connection (spec 3, 4, 5, 6).
//!
//! # Driving it
//!
//! The runtime owns the socket and a buffer; the [`Connection`] owns every
//! protocol rule. Inputs are [`Connection::feed`] (bytes read from the web
//! server) and [`Connection::end_request`] (a handler finished). Outputs are
//! the [`Event`]s `feed` returns, the management replies in
//! [`Connection::pending_output`], and the bytes of each [`Frame`] and
//! [`EndRequest`]. The rule: **after every input, drain the outputs until
//! there are none**:
//!
//! 1. Call `feed` with all unconsumed bytes. Drop `consumed` bytes from the
//!    front of the buffer (`copy_within` the rest to the start).
//! 2. Handle the event, if any (route params, stdin and data to the request
//!    it names; start a handler on [`Event::ParamsEnd`]).
//! 3. Write [`Connection::pending_output`] and call
//!    [`Connection::advance_output`] with what was written.
//! 4. If `feed` consumed nothing and returned no event, read more bytes;
//!    otherwise go to 1.
//! 5. When a handler is done, write its [`EndRequest`]; close the socket when
//!    [`EndRequest::close_connection`] (or [`Connection::is_closed`]) says so.
//!
//! A [`ProtocolError`] from `feed` is final: log it and close the connection.
//!
//! # What it answers by itself
//!
//! - FCGI_GET_VALUES: FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS from
//!   its [`Config`]; unknown names are left out (spec 4.1).
//! - Any other record with the null request id: FCGI_UNKNOWN_TYPE (spec 4.2).
//! - FCGI_BEGIN_REQUEST with an unknown role: END_REQUEST with
//!   FCGI_UNKNOWN_ROLE; a second concurrent request when multiplexing is off:
//!   FCGI_CANT_MPX_CONN; beyond the per-connection limit when it is on:
//!   FCGI_OVERLOADED (spec 5.5).
//!
//! # Defined outcomes for bad input
//!
//! | input | outcome |
//! | --- | --- |
//! | version other than 1 | [`ProtocolError::UnsupportedVersion`] |
//! | BEGIN_REQUEST body not 8 bytes | [`ProtocolError::BodyLength`] |
//! | BEGIN_REQUEST for an active id | [`ProtocolError::DuplicateRequest`] |
//! | BEGIN_REQUEST with request id 0 | FCGI_UNKNOWN_TYPE reply, record skipped |
//! | STDIN before PARAMS ended, any stream after it ended, DATA before STDIN ended | [`ProtocolError::UnexpectedRecord`] |
//! | any record for an inactive request id | ignored (spec 3.3) |
//! | a second ABORT_REQUEST | ignored: abort is reported once |
//! | STDOUT, STDERR, END_REQUEST, ... sent to the application | ignored |
//! | GET_VALUES ending inside a pair | [`ProtocolError::TruncatedGetValues`] |

use crate::begin_request::{BeginRequestBody, Role};
use crate::end_request::{EndRequestBody, ProtocolStatus};
use crate::error::ProtocolError;
use crate::header::{HEADER_LEN, Header, NULL_REQUEST_ID, Record, RecordType, VERSION_1};
use crate::name_value::{NameValue, PairSink, PairStream};
use crate::output::{EndRequest, Output};
use crate::unknown_type::UnknownTypeBody;

#[cfg(doc)]
use crate::output::Frame;

/// `FCGI_MAX_CONNS`: the GET_VALUES variable for the connection limit.
pub const FCGI_MAX_CONNS: &str = "FCGI_MAX_CONNS";
/// `FCGI_MAX_REQS`: the GET_VALUES variable for the request limit.
pub const FCGI_MAX_REQS: &str = "FCGI_MAX_REQS";
/// `FCGI_MPXS_CONNS`: the GET_VALUES variable saying whether connections are
/// multiplexed.
pub const FCGI_MPXS_CONNS: &str = "FCGI_MPXS_CONNS";

/// Room kept for management replies awaiting the runtime.
const OUTPUT_CAPACITY: usize = 256;

/// The largest management reply: a GET_VALUES_RESULT with all three
/// variables and 10-digit values (69 content bytes, padded to 72).
const MAX_REPLY_LEN: usize = HEADER_LEN + 72;

/// The limits a connection reports and enforces.
///
/// `max_conns` and `max_reqs` are the application's real limits, reported to
/// the web server through FCGI_GET_VALUES; the runtime fills them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// FCGI_MAX_CONNS: the most transport connections the application serves
    /// at once. Default 1.
    pub max_conns: u32,
    /// FCGI_MAX_REQS: the most requests the application serves at once.
    /// Default 1.
    pub max_reqs: u32,
    /// FCGI_MPXS_CONNS: whether one connection may carry concurrent requests.
    /// When off, a second request gets FCGI_CANT_MPX_CONN. Default off.
    pub multiplex: bool,
    /// With `multiplex`, the most concurrent requests on one connection;
    /// further ones get FCGI_OVERLOADED. Bounded by the `Connection`'s `REQS`
    /// capacity. Default `u16::MAX` (the capacity decides).
    pub max_reqs_per_conn: u16,
}

/// What one call to [`Connection::feed`] did.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "consumed bytes must be dropped from the buffer and the event handled"]
pub struct Progress<'a> {
    /// How many bytes from the front of the input were used.
    pub consumed: usize,
    /// What those bytes meant, if anything the runtime must act on.
    pub event: Option<Event<'a>>,
}

/// Something the runtime must act on. Chunks borrow from the bytes passed to
/// [`Connection::feed`]: the `bytes` of a [`Event::Params`], [`Event::Stdin`]
/// or [`Event::Data`] are always the last `bytes.len()` bytes of the
/// `consumed` input, so a runtime can also find them by offset in its buffer
/// and hand them out later.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// A request began. Its params follow.
    Begin {
        /// The new request's id.
        request_id: u16,
        /// The role asked for (never `Role::Unknown`: those are refused).
        role: Role,
        /// Whether the web server keeps the connection after this request.
        keep_conn: bool,
        /// The request's output: frames its streams, and is handed back to
        /// [`Connection::end_request`] to end it.
        output: Output,
    },
    /// A piece of the request's PARAMS stream: name-value pairs, possibly
    /// split anywhere. Feed it to the request's [`Params`](crate::Params).
    Params {
        /// The request it belongs to.
        request_id: u16,
        /// The piece.
        bytes: &'a [u8],
    },
    /// The PARAMS stream ended: the request's environment is complete and its
    /// handler may start.
    ParamsEnd {
        /// The request it belongs to.
        request_id: u16,
    },
    /// A piece of the request body (FCGI_STDIN).
    Stdin {
        /// The request it belongs to.
        request_id: u16,
        /// The piece.
        bytes: &'a [u8],
    },
    /// The request body ended.
    StdinEnd {
        /// The request it belongs to.
        request_id: u16,
    },
    /// A piece of the Filter role's data stream (FCGI_DATA).
    Data {
        /// The request it belongs to.
        request_id: u16,
        /// The piece.
        bytes: &'a [u8],
    },
    /// The data stream ended.
    DataEnd {
        /// The request it belongs to.
        request_id: u16,
    },
    /// The web server aborted the request (reported once). The handler should
    /// stop and the request be ended as soon as possible (spec 5.4).
    Abort {
        /// The request it belongs to.
        request_id: u16,
    },
}

/// The state machine of one FastCGI transport connection.
///
/// `REQS` is how many requests it can track at once: 1 (the default) for
/// runtimes that serve one request per connection at a time; more for
/// multiplexing runtimes, together with [`Config::multiplex`].
///
/// ```
/// use simple_fastcgi_core::{BeginRequestBody, Config, Connection, Event, Record, RecordType, Role};
///
/// let mut input = [0u8; 64];
/// let mut n = BeginRequestBody::new(Role::Responder, false).encode(1, &mut input).expect("fits");
/// n += Record::encode(RecordType::Params, 1, b"\x01\x01AB", &mut input[n..]).expect("fits");
///
/// let mut conn: Connection = Connection::new(Config::new());
/// let progress = conn.feed(&input[..n])?;
/// assert!(matches!(progress.event, Some(Event::Begin { request_id: 1, .. })));
/// let progress = conn.feed(&input[progress.consumed..n])?;
/// assert_eq!(progress.event, Some(Event::Params { request_id: 1, bytes: b"\x01\x01AB" }));
/// # Ok::<(), simple_fastcgi_core::ProtocolError>(())
/// ```
#[derive(Debug)]
pub struct Connection<const REQS: usize = 1> {
    config: Config,
    reading: Reading,
    requests: heapless::Vec<Slot, REQS>,
    query: Query,
    output: heapless::Vec<u8, OUTPUT_CAPACITY>,
    output_sent: usize,
    close_pending: bool,
    /// Requests that ended (or were refused) while the web server could
    /// still send them input: their streams are followed, though their
    /// records are skipped, until they end or the id begins again.
    ended: heapless::Vec<Slot, REQS>,
    /// More of those than `ended` holds: the web server may still send
    /// input until a BEGIN_REQUEST (without multiplexing, none active).
    ended_overflow: bool,
    error: Option<ProtocolError>,
}

/// Where the connection is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Header,
    Content {
        remaining: usize,
        padding: u8,
        target: Target,
    },
    Padding {
        remaining: usize,
    },
}

/// What a record's content is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Skip,
    GetValues,
    Stream { kind: Stream, request_id: u16 },
}

/// The three input streams, in the order they must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Params,
    Stdin,
    Data,
}

/// An active request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    request_id: u16,
    role: Role,
    keep_conn: bool,
    aborted: bool,
    /// The stream being received; `None` once DATA ended.
    receiving: Option<Stream>,
}

impl Slot {
    fn new(request_id: u16, body: BeginRequestBody) -> Slot {
        Slot {
            request_id,
            role: body.role,
            keep_conn: body.keep_conn(),
            aborted: false,
            receiving: Some(Stream::Params),
        }
    }

    /// Whether the request waits for input the web server owes it: a
    /// stream its role reads has not ended and it was not aborted. A
    /// Responder reads PARAMS and STDIN, a Filter also DATA (spec 6.2,
    /// 6.4), an Authorizer only PARAMS (spec 6.3: web servers send it no
    /// STDIN, or an empty one).
    fn awaits_input(&self) -> bool {
        !self.aborted
            && match self.receiving {
                Some(Stream::Params) => true,
                Some(Stream::Stdin) => self.role.has_stdin(),
                Some(Stream::Data) => self.role == Role::Filter,
                None => false,
            }
    }

    /// Whether the web server may still send the request input: a stream
    /// it may send has not ended, aborted or not. That includes the STDIN
    /// an Authorizer may get after all; DATA only a Filter gets.
    fn may_get_input(&self) -> bool {
        match self.receiving {
            Some(Stream::Params | Stream::Stdin) => true,
            Some(Stream::Data) => self.role == Role::Filter,
            None => false,
        }
    }

    /// Notes the end of the `kind` stream of an ended request (its records
    /// are skipped): `false` once the web server can send it nothing more.
    fn follow(&mut self, kind: Stream) -> bool {
        if self.receiving == Some(kind) {
            self.receiving = kind.next();
        }
        self.may_get_input()
    }
}

/// The GET_VALUES variables this library answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    MaxConns,
    MaxReqs,
    MpxsConns,
}

/// A GET_VALUES query being read.
#[derive(Debug)]
struct Query {
    stream: PairStream,
    names: QueryNames,
}

/// The names a GET_VALUES query asked for; each is answered once.
#[derive(Debug)]
struct QueryNames {
    name: heapless::Vec<u8, 16>,
    name_too_long: bool,
    asked: heapless::Vec<Variable, 3>,
}

impl Config {
    /// The defaults: one connection, one request, no multiplexing.
    pub const fn new() -> Self {
        Config {
            max_conns: 1,
            max_reqs: 1,
            multiplex: false,
            max_reqs_per_conn: u16::MAX,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Reading {
    /// After a record's content: its padding, if any, then the next header.
    fn padding(length: u8) -> Reading {
        match length {
            0 => Reading::Header,
            length => Reading::Padding {
                remaining: usize::from(length),
            },
        }
    }
}

impl Stream {
    fn of(record_type: RecordType) -> Option<Stream> {
        match record_type {
            RecordType::Params => Some(Stream::Params),
            RecordType::Stdin => Some(Stream::Stdin),
            RecordType::Data => Some(Stream::Data),
            _ => None,
        }
    }

    fn next(self) -> Option<Stream> {
        match self {
            Stream::Params => Some(Stream::Stdin),
            Stream::Stdin => Some(Stream::Data),
            Stream::Data => None,
        }
    }

    fn chunk(self, request_id: u16, bytes: &[u8]) -> Event<'_> {
        match self {
            Stream::Params => Event::Params { request_id, bytes },
            Stream::Stdin => Event::Stdin { request_id, bytes },
            Stream::Data => Event::Data { request_id, bytes },
        }
    }

    fn end(self, request_id: u16) -> Event<'static> {
        match self {
            Stream::Params => Event::ParamsEnd { request_id },
            Stream::Stdin => Event::StdinEnd { request_id },
            Stream::Data => Event::DataEnd { request_id },
        }
    }
}

impl Variable {
    const ALL: [Variable; 3] = [Variable::MaxConns, Variable::MaxReqs, Variable::MpxsConns];

    fn name(self) -> &'static str {
        match self {
            Variable::MaxConns => FCGI_MAX_CONNS,
            Variable::MaxReqs => FCGI_MAX_REQS,
            Variable::MpxsConns => FCGI_MPXS_CONNS,
        }
    }
}

impl Query {
    const fn new() -> Self {
        Query {
            stream: PairStream::new(),
            names: QueryNames {
                name: heapless::Vec::new(),
                name_too_long: false,
                asked: heapless::Vec::new(),
            },
        }
    }
}

impl PairSink for QueryNames {
    type Error = core::convert::Infallible;

    fn begin(&mut self, _name_len: usize, _value_len: usize) -> Result<(), Self::Error> {
        self.name.clear();
        self.name_too_long = false;
        Ok(())
    }

    fn name(&mut self, bytes: &[u8]) {
        if self.name.extend_from_slice(bytes).is_err() {
            self.name_too_long = true;
        }
    }

    fn value(&mut self, _bytes: &[u8]) {}

    fn end(&mut self) -> Result<(), Self::Error> {
        if self.name_too_long {
            return Ok(());
        }
        let known = Variable::ALL
            .into_iter()
            .find(|variable| variable.name().as_bytes() == self.name.as_slice());
        if let Some(variable) = known {
            if !self.asked.contains(&variable) {
                // Three variables, three places.
                let _ = self.asked.push(variable);
            }
        }
        Ok(())
    }
}

impl<const REQS: usize> Connection<REQS> {
    /// A connection that has seen no bytes yet.
    pub const fn new(config: Config) -> Self {
        Connection {
            config,
            reading: Reading::Header,
            requests: heapless::Vec::new(),
            query: Query::new(),
            output: heapless::Vec::new(),
            output_sent: 0,
            close_pending: false,
            ended: heapless::Vec::new(),
            ended_overflow: false,
            error: None,
        }
    }

    /// The configuration it reports and enforces.
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// Reads records from `input`: returns how many bytes were used and at
    /// most one event. Call again with the unused rest; when nothing is
    /// consumed and no event comes, more input is needed (or, while
    /// [`Connection::pending_output`] is not empty, the replies must be
    /// written first).
    ///
    /// Record content is consumed as it arrives, so the runtime's buffer
    /// needs to hold only 16 bytes (a header and a BEGIN_REQUEST body); the
    /// bigger the buffer, the bigger the chunks.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<Progress<'a>, ProtocolError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut pos = 0;
        while !self.is_closed() {
            let rest = &input[pos..];
            match self.reading {
                Reading::Header => {
                    let Ok((_, header)) = Header::parse(rest) else {
                        break;
                    };
                    if header.version != VERSION_1 {
                        return Err(self.fail(ProtocolError::UnsupportedVersion(header.version)));
                    }
                    let begin = header.record_type == RecordType::BeginRequest
                        && header.request_id != NULL_REQUEST_ID;
                    let may_reply = begin || header.request_id == NULL_REQUEST_ID;
                    if may_reply && OUTPUT_CAPACITY - self.output.len() < MAX_REPLY_LEN {
                        break;
                    }
                    if begin {
                        if usize::from(header.content_length) != BeginRequestBody::LEN {
                            return Err(self.fail(ProtocolError::BodyLength {
                                record_type: header.record_type,
                                request_id: header.request_id,
                                length: header.content_length,
                                expected: BeginRequestBody::CONTENT_LENGTH,
                            }));
                        }
                        let Ok((_, body)) = BeginRequestBody::parse(&rest[HEADER_LEN..]) else {
                            break;
                        };
                        pos += HEADER_LEN + BeginRequestBody::LEN;
                        self.reading = Reading::padding(header.padding_length);
                        if let Some(event) = self.begin_request(header.request_id, body)? {
                            return Ok(Progress {
                                consumed: pos,
                                event: Some(event),
                            });
                        }
                        continue;
                    }
                    pos += HEADER_LEN;
                    if let Some(event) = self.start_record(header)? {
                        return Ok(Progress {
                            consumed: pos,
                            event: Some(event),
                        });
                    }
                }
                Reading::Content {
                    remaining,
                    padding,
                    target,
                } => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = remaining.min(rest.len());
                    let chunk = &rest[..take];
                    pos += take;
                    let remaining = remaining - take;
                    self.reading = if remaining == 0 {
                        Reading::padding(padding)
                    } else {
                        Reading::Content {
                            remaining,
                            padding,
                            target,
                        }
                    };
                    match target {
                        Target::Skip => {}
                        Target::GetValues => {
                            let Ok(()) = self.query.stream.feed(chunk, &mut self.query.names);
                            if remaining == 0 {
                                self.answer_query()?;
                            }
                        }
                        Target::Stream { kind, request_id } => {
                            return Ok(Progress {
                                consumed: pos,
                                event: Some(kind.chunk(request_id, chunk)),
                            });
                        }
                    }
                }
                Reading::Padding { remaining } => {
                    let take = remaining.min(rest.len());
                    pos += take;
                    if take == remaining {
                        self.reading = Reading::Header;
                    } else {
                        self.reading = Reading::Padding {
                            remaining: remaining - take,
                        };
                        break;
                    }
                }
            }
        }
        Ok(Progress {
            consumed: pos,
            event: None,
        })
    }

    /// Management replies (GET_VALUES_RESULT, UNKNOWN_TYPE, refusals) waiting
    /// to be written, as whole records.
    pub fn pending_output(&self) -> &[u8] {
        &self.output[self.output_sent..]
    }

    /// Marks `n` bytes of [`Connection::pending_output`] as written.
    pub fn advance_output(&mut self, n: usize) {
        self.output_sent = (self.output_sent + n).min(self.output.len());
        if self.output_sent == self.output.len() {
            self.output.clear();
            self.output_sent = 0;
        }
    }

    /// Ends the request `output` belongs to with FCGI_REQUEST_COMPLETE and
    /// `app_status` (like a CGI program's exit status). Returns the bytes to
    /// write after the request's output: the empty STDOUT (and STDERR, if
    /// used) that end the streams, then FCGI_END_REQUEST.
    ///
    /// From then on the request id is inactive: later records for it are
    /// ignored until a new BEGIN_REQUEST.
    pub fn end_request(&mut self, output: Output, app_status: u32) -> EndRequest {
        self.finish(output, app_status, ProtocolStatus::RequestComplete)
    }

    /// Refuses the request `output` belongs to with a protocol status other
    /// than complete, such as FCGI_OVERLOADED when the runtime has no room
    /// for it. Before any output this is the END_REQUEST record alone.
    pub fn reject(&mut self, output: Output, protocol_status: ProtocolStatus) -> EndRequest {
        self.finish(output, 0, protocol_status)
    }

    /// Whether the connection is done: a request without FCGI_KEEP_CONN has
    /// ended and no other is active, or a protocol error happened. Write
    /// [`Connection::pending_output`], then close the socket.
    pub fn is_closed(&self) -> bool {
        self.error.is_some() || (self.close_pending && self.requests.is_empty())
    }

    /// How many requests are active (begun and not yet ended).
    pub fn active_requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether `request_id` is active.
    pub fn is_active(&self, request_id: u16) -> bool {
        self.slot(request_id).is_some()
    }

    /// Whether the web server aborted `request_id`.
    pub fn is_aborted(&self, request_id: u16) -> bool {
        self.slot(request_id).is_some_and(|slot| slot.aborted)
    }

    /// Whether the connection stopped in the middle of a record: true when
    /// the peer closing now would cut a record short.
    pub fn is_mid_record(&self) -> bool {
        self.reading != Reading::Header
    }

    /// Whether the connection waits for the web server: an active request
    /// is owed input (a stream its role reads has not ended: PARAMS and
    /// STDIN, and DATA for a Filter; an Authorizer reads PARAMS only), or a
    /// record is cut short. A runtime applies its read timeout while this
    /// holds.
    pub fn awaits_input(&self) -> bool {
        self.is_mid_record() || self.requests.iter().any(Slot::awaits_input)
    }

    /// Whether the web server may still send on this connection: a record
    /// is cut short, or a stream it may send has not ended, for an active
    /// request (aborted or not; an Authorizer's optional STDIN included) or
    /// for one that ended or was refused before all its input came (a body
    /// the handler did not read, the empty STDIN some web servers send
    /// after the answer has begun). The streams of ended requests are
    /// followed while their records are skipped.
    ///
    /// A runtime that closes the connection while this holds should close
    /// it lingering: shut its sending side, then read and drop what comes
    /// for a while. Closing a socket with unread input resets the
    /// connection, and the web server then loses the answer it is reading.
    pub fn expects_input(&self) -> bool {
        self.is_mid_record()
            || self.ended_overflow
            || !self.ended.is_empty()
            || self.requests.iter().any(Slot::may_get_input)
    }

    /// Follows an ended request that may still get input.
    fn keep_ended(&mut self, slot: Slot) {
        if slot.may_get_input() && self.ended.push(slot).is_err() {
            self.ended_overflow = true;
        }
    }

    fn finish(
        &mut self,
        output: Output,
        app_status: u32,
        protocol_status: ProtocolStatus,
    ) -> EndRequest {
        if let Some(index) = self
            .requests
            .iter()
            .position(|slot| slot.request_id == output.request_id())
        {
            let slot = self.requests.swap_remove(index);
            self.close_pending |= !slot.keep_conn;
            self.keep_ended(slot);
        }
        let close = self.is_closed();
        output.end(app_status, protocol_status, close)
    }

    fn slot(&self, request_id: u16) -> Option<&Slot> {
        self.requests
            .iter()
            .find(|slot| slot.request_id == request_id)
    }

    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        warn!("FastCGI protocol error: {}", error);
        self.error = Some(error);
        error
    }

    fn queue(&mut self, record: &[u8]) {
        // Callers checked for MAX_REPLY_LEN of room before taking the record.
        let _fits = self.output.extend_from_slice(record);
        debug_assert!(_fits.is_ok());
    }

    fn begin_request(
        &mut self,
        request_id: u16,
        body: BeginRequestBody,
    ) -> Result<Option<Event<'static>>, ProtocolError> {
        if self.slot(request_id).is_some() {
            return Err(self.fail(ProtocolError::DuplicateRequest(request_id)));
        }
        // The id begins again: its earlier request's input is over.
        self.ended.retain(|slot| slot.request_id != request_id);
        if !self.config.multiplex && self.requests.is_empty() {
            // One request at a time: the web server sent all it had for
            // the ones before this one.
            self.ended.clear();
            self.ended_overflow = false;
        }
        let limit = if self.config.multiplex {
            usize::from(self.config.max_reqs_per_conn).min(REQS)
        } else {
            1
        };
        let refusal = if matches!(body.role, Role::Unknown(_)) {
            Some(ProtocolStatus::UnknownRole)
        } else if self.requests.len() >= limit {
            if self.config.multiplex {
                Some(ProtocolStatus::Overloaded)
            } else {
                Some(ProtocolStatus::CantMpxConn)
            }
        } else {
            let slot = Slot::new(request_id, body);
            self.requests
                .push(slot)
                .err()
                .map(|_| ProtocolStatus::Overloaded)
        };
        if let Some(protocol_status) = refusal {
            debug!("refusing request {}: {}", request_id, protocol_status);
            let record = EndRequestBody {
                app_status: 0,
                protocol_status,
            }
            .record(request_id);
            self.queue(&record);
            self.close_pending |= !body.keep_conn();
            // Its streams may follow all the same.
            self.keep_ended(Slot::new(request_id, body));
            return Ok(None);
        }
        Ok(Some(Event::Begin {
            request_id,
            role: body.role,
            keep_conn: body.keep_conn(),
            output: Output::new(request_id),
        }))
    }

    /// Takes a record's header (everything but BEGIN_REQUEST): sets up how its
    /// content is read and returns the event the header alone means.
    fn start_record(&mut self, header: Header) -> Result<Option<Event<'static>>, ProtocolError> {
        let request_id = header.request_id;
        let mut event = None;
        let target = if request_id == NULL_REQUEST_ID {
            if header.record_type == RecordType::GetValues {
                self.query = Query::new();
                Target::GetValues
            } else {
                let record = UnknownTypeBody {
                    record_type: header.record_type,
                }
                .record();
                self.queue(&record);
                Target::Skip
            }
        } else if header.record_type == RecordType::AbortRequest {
            if let Some(slot) = self
                .requests
                .iter_mut()
                .find(|slot| slot.request_id == request_id)
            {
                if !slot.aborted {
                    slot.aborted = true;
                    event = Some(Event::Abort { request_id });
                }
            }
            Target::Skip
        } else if let Some(kind) = Stream::of(header.record_type) {
            match self
                .requests
                .iter_mut()
                .find(|slot| slot.request_id == request_id)
            {
                // Inactive request ids are ignored (spec 3.3), though the
                // end of an ended request's stream is noted.
                None => {
                    if header.content_length == 0 {
                        self.ended
                            .retain_mut(|slot| slot.request_id != request_id || slot.follow(kind));
                    }
                    Target::Skip
                }
                Some(slot) if slot.receiving != Some(kind) => {
                    return Err(self.fail(ProtocolError::UnexpectedRecord {
                        record_type: header.record_type,
                        request_id,
                    }));
                }
                Some(slot) => {
                    if header.content_length == 0 {
                        slot.receiving = kind.next();
                        event = Some(kind.end(request_id));
                    }
                    Target::Stream { kind, request_id }
                }
            }
        } else {
            // Types only the application sends, or unknown application
            // record types: nothing to do.
            Target::Skip
        };
        self.reading = if header.content_length == 0 {
            if target == Target::GetValues {
                self.answer_query()?;
            }
            Reading::padding(header.padding_length)
        } else {
            Reading::Content {
                remaining: usize::from(header.content_length),
                padding: header.padding_length,
                target,
            }
        };
        Ok(event)
    }

    fn answer_query(&mut self) -> Result<(), ProtocolError> {
        if !self.query.stream.is_between_pairs() {
            return Err(self.fail(ProtocolError::TruncatedGetValues));
        }
        let mut content = [0u8; MAX_REPLY_LEN - HEADER_LEN];
        let mut len = 0;
        for variable in self.query.names.asked.clone() {
            let mut digits = [0u8; 10];
            let value = match variable {
                Variable::MaxConns => decimal(self.config.max_conns, &mut digits),
                Variable::MaxReqs => decimal(self.config.max_reqs, &mut digits),
                Variable::MpxsConns => {
                    if self.config.multiplex {
                        b"1"
                    } else {
                        b"0"
                    }
                }
            };
            let pair = NameValue::new(variable.name().as_bytes(), value);
            // Sized for all three with the longest values.
            if let Ok(n) = pair.encode(&mut content[len..]) {
                len += n;
            }
        }
        let mut record = [0u8; MAX_REPLY_LEN];
        if let Ok(n) = Record::encode(
            RecordType::GetValuesResult,
            NULL_REQUEST_ID,
            &content[..len],
            &mut record,
        ) {
            self.queue(&record[..n]);
        }
        Ok(())
    }
}

/// Writes `value` in decimal into `digits`, returning the used tail.
fn decimal(mut value: u32, digits: &mut [u8; 10]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        // A single decimal digit.
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::begin_request::KEEP_CONN;
    use crate::params::Params;

    /// Appends records to a byte buffer.
    struct Wire {
        bytes: [u8; 4096],
        len: usize,
    }

    impl Wire {
        fn new() -> Self {
            Wire {
                bytes: [0; 4096],
                len: 0,
            }
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
            self
        }
        fn record(mut self, record_type: RecordType, request_id: u16, content: &[u8]) -> Self {
            self.len += Record::encode(
                record_type,
                request_id,
                content,
                &mut self.bytes[self.len..],
            )
            .unwrap();
            self
        }
        fn begin(self, request_id: u16, role: Role, keep_conn: bool) -> Self {
            let record = BeginRequestBody::new(role, keep_conn).record(request_id);
            self.raw(&record)
        }
        fn as_slice(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
    }

    /// Feeds all of `input`, collecting events as text and outputs.
    fn run<const REQS: usize>(
        conn: &mut Connection<REQS>,
        input: &[u8],
    ) -> Result<Events, ProtocolError> {
        let mut events = Events::default();
        let mut pos = 0;
        loop {
            let progress = conn.feed(&input[pos..])?;
            pos += progress.consumed;
            let done = progress.consumed == 0 && progress.event.is_none();
            if let Some(event) = progress.event {
                events.push(event);
            }
            let out = conn.pending_output();
            events.output[events.output_len..events.output_len + out.len()].copy_from_slice(out);
            events.output_len += out.len();
            let n = out.len();
            conn.advance_output(n);
            if done && n == 0 {
                events.unconsumed = input.len() - pos;
                return Ok(events);
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Seen {
        Begin(u16, Role, bool),
        Params(u16, usize),
        ParamsEnd(u16),
        Stdin(u16, usize),
        StdinEnd(u16),
        Data(u16, usize),
        DataEnd(u16),
        Abort(u16),
    }

    struct Events {
        seen: heapless::Vec<Seen, 64>,
        outputs: heapless::Vec<Output, 8>,
        output: [u8; 1024],
        output_len: usize,
        unconsumed: usize,
    }

    impl Default for Events {
        fn default() -> Self {
            Events {
                seen: heapless::Vec::new(),
                outputs: heapless::Vec::new(),
                output: [0; 1024],
                output_len: 0,
                unconsumed: 0,
            }
        }
    }

    impl Events {
        fn push(&mut self, event: Event<'_>) {
            let seen = match event {
                Event::Begin {
                    request_id,
                    role,
                    keep_conn,
                    output,
                } => {
                    self.outputs.push(output).unwrap();
                    Seen::Begin(request_id, role, keep_conn)
                }
                Event::Params { request_id, bytes } => Seen::Params(request_id, bytes.len()),
                Event::ParamsEnd { request_id } => Seen::ParamsEnd(request_id),
                Event::Stdin { request_id, bytes } => Seen::Stdin(request_id, bytes.len()),
                Event::StdinEnd { request_id } => Seen::StdinEnd(request_id),
                Event::Data { request_id, bytes } => Seen::Data(request_id, bytes.len()),
                Event::DataEnd { request_id } => Seen::DataEnd(request_id),
                Event::Abort { request_id } => Seen::Abort(request_id),
            };
            self.seen.push(seen).unwrap();
        }
        fn output(&self) -> &[u8] {
            &self.output[..self.output_len]
        }
        fn take_output(&mut self, request_id: u16) -> Output {
            let index = self
                .outputs
                .iter()
                .position(|o| o.request_id() == request_id)
                .unwrap();
            self.outputs.swap_remove(index)
        }
    }

    const SPEC_PARAMS: &[u8] = b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42";

    #[test]
    fn spec_example_1_simple_request() {
        // {FCGI_BEGIN_REQUEST, 1, {FCGI_RESPONDER, 0}}
        // {FCGI_PARAMS, 1, "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42"}
        // {FCGI_PARAMS, 1, ""}
        // {FCGI_STDIN, 1, ""}
        let wire = Wire::new()
            .raw(&[
                0x01, 0x01, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, // BEGIN_REQUEST, id 1
                0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Responder, no flags
            ])
            .record(RecordType::Params, 1, SPEC_PARAMS)
            .raw(&[0x01, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]) // empty PARAMS
            .raw(&[0x01, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]); // empty STDIN
        let mut conn: Connection = Connection::new(Config::new());
        let mut events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(
            events.seen,
            [
                Seen::Begin(1, Role::Responder, false),
                Seen::Params(1, SPEC_PARAMS.len()),
                Seen::ParamsEnd(1),
                Seen::StdinEnd(1),
            ]
        );
        assert_eq!(events.unconsumed, 0);
        assert!(events.output().is_empty());
        assert!(conn.is_active(1));

        // The response: STDOUT, empty STDOUT, END_REQUEST; then the
        // connection closes (no FCGI_KEEP_CONN).
        let mut output = events.take_output(1);
        let frame = output
            .stdout(b"Content-type: text/html\r\n\r\n<html>")
            .next()
            .unwrap();
        assert_eq!(
            frame.header(),
            &[0x01, 0x06, 0x00, 0x01, 0x00, 0x21, 0x07, 0x00]
        );
        let end = conn.end_request(output, 0);
        assert_eq!(
            end.as_bytes(),
            &[
                0x01, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // {FCGI_STDOUT, 1, ""}
                0x01, 0x03, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, // {FCGI_END_REQUEST, 1,
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, //  {0, FCGI_REQUEST_COMPLETE}}
            ]
        );
        assert!(end.close_connection());
        assert!(conn.is_closed());
        assert!(!conn.is_active(1));
        // Nothing more is read once closed.
        let more = Wire::new().begin(2, Role::Responder, true);
        assert_eq!(
            conn.feed(more.as_slice()).unwrap(),
            Progress {
                consumed: 0,
                event: None
            }
        );
    }

    #[test]
    fn spec_example_2_params_split_across_records_and_stdin() {
        let wire = Wire::new()
            .begin(1, Role::Responder, false)
            .record(RecordType::Params, 1, &SPEC_PARAMS[..17])
            .record(RecordType::Params, 1, &SPEC_PARAMS[17..])
            .record(RecordType::Params, 1, b"")
            .record(RecordType::Stdin, 1, b"quantity=100&item=3047936")
            .record(RecordType::Stdin, 1, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let mut params = Params::<256, 8>::new();
        let mut stdin = heapless::Vec::<u8, 64>::new();
        let mut pos = 0;
        let input = wire.as_slice();
        let mut finished = false;
        while !finished {
            let progress = conn.feed(&input[pos..]).unwrap();
            pos += progress.consumed;
            match progress.event.unwrap() {
                Event::Params { bytes, .. } => params.feed(bytes).unwrap(),
                Event::ParamsEnd { .. } => params.finish().unwrap(),
                Event::Stdin { bytes, .. } => stdin.extend_from_slice(bytes).unwrap(),
                Event::StdinEnd { .. } => finished = true,
                _ => {}
            }
        }
        assert_eq!(params.get_str("SERVER_PORT"), Some("80"));
        assert_eq!(params.get_str("SERVER_ADDR"), Some("199.170.183.42"));
        assert_eq!(stdin, b"quantity=100&item=3047936");
        assert_eq!(pos, input.len());
    }

    #[test]
    fn spec_example_4_multiplexed_requests() {
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, SPEC_PARAMS)
            .record(RecordType::Params, 1, b"")
            .begin(2, Role::Responder, true)
            .record(RecordType::Params, 2, SPEC_PARAMS)
            .record(RecordType::Stdin, 1, b"")
            .record(RecordType::Params, 2, b"")
            .record(RecordType::Stdin, 2, b"");
        let config = Config {
            multiplex: true,
            ..Config::new()
        };
        let mut conn: Connection<4> = Connection::new(config);
        let mut events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(
            events.seen,
            [
                Seen::Begin(1, Role::Responder, true),
                Seen::Params(1, SPEC_PARAMS.len()),
                Seen::ParamsEnd(1),
                Seen::Begin(2, Role::Responder, true),
                Seen::Params(2, SPEC_PARAMS.len()),
                Seen::StdinEnd(1),
                Seen::ParamsEnd(2),
                Seen::StdinEnd(2),
            ]
        );
        assert_eq!(conn.active_requests(), 2);
        // Finished out of order; the connection stays open (KEEP_CONN).
        let end2 = conn.end_request(events.take_output(2), 0);
        assert!(!end2.close_connection());
        let end1 = conn.end_request(events.take_output(1), 0);
        assert!(!end1.close_connection());
        assert!(!conn.is_closed());
        assert_eq!(conn.active_requests(), 0);
    }

    #[test]
    fn get_values_reports_the_configured_limits() {
        let mut query = [0u8; 64];
        let mut n = 0;
        for name in [FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS] {
            n += NameValue::new(name.as_bytes(), b"")
                .encode(&mut query[n..])
                .unwrap();
        }
        let wire = Wire::new().record(RecordType::GetValues, 0, &query[..n]);
        let config = Config {
            max_conns: 10,
            max_reqs: 4_294_967_295,
            multiplex: true,
            max_reqs_per_conn: 8,
        };
        let mut conn: Connection<8> = Connection::new(config);
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert!(events.seen.is_empty());
        let (rest, record) = Record::parse(events.output()).unwrap();
        assert!(rest.is_empty());
        assert_eq!(record.header.record_type, RecordType::GetValuesResult);
        assert_eq!(record.header.request_id, 0);
        assert_eq!(
            record.content,
            b"\x0e\x02FCGI_MAX_CONNS10\x0d\x0aFCGI_MAX_REQS4294967295\x0f\x01FCGI_MPXS_CONNS1"
        );
        assert_eq!(record.header.record_len() % 8, 0);
        assert!(record.header.record_len() <= MAX_REPLY_LEN);
    }

    #[test]
    fn get_values_omits_unknown_names_and_answers_each_once() {
        let mut query = [0u8; 128];
        let mut n = 0;
        for name in [
            "FCGI_MPXS_CONNS",
            "X_UNKNOWN",
            "A_VERY_LONG_UNKNOWN_VARIABLE_NAME",
            "FCGI_MPXS_CONNS",
        ] {
            n += NameValue::new(name.as_bytes(), b"")
                .encode(&mut query[n..])
                .unwrap();
        }
        let wire = Wire::new()
            .record(RecordType::GetValues, 0, &query[..n])
            .record(RecordType::GetValues, 0, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        let (rest, first) = Record::parse(events.output()).unwrap();
        assert_eq!(first.content, b"\x0f\x01FCGI_MPXS_CONNS0");
        let (rest, second) = Record::parse(rest).unwrap();
        assert_eq!(second.header.record_type, RecordType::GetValuesResult);
        assert_eq!(second.content, b"", "an empty query gets an empty result");
        assert!(rest.is_empty());
    }

    #[test]
    fn get_values_content_split_one_byte_at_a_time() {
        let mut query = [0u8; 64];
        let n = NameValue::new(b"FCGI_MAX_REQS", b"")
            .encode(&mut query)
            .unwrap();
        let wire = Wire::new().record(RecordType::GetValues, 0, &query[..n]);
        let input = wire.as_slice();
        let mut conn: Connection = Connection::new(Config::new());
        assert_eq!(
            conn.feed(&input[..7]).unwrap().consumed,
            0,
            "a header is taken whole"
        );
        assert_eq!(conn.feed(&input[..8]).unwrap().consumed, 8);
        for (i, byte) in input[8..].iter().enumerate() {
            // The reply is queued once the last content byte is read.
            assert_eq!(conn.pending_output().is_empty(), i < n);
            assert_eq!(conn.feed(core::slice::from_ref(byte)).unwrap().consumed, 1);
        }
        let (_, record) = Record::parse(conn.pending_output()).unwrap();
        assert_eq!(record.content, b"\x0d\x01FCGI_MAX_REQS1");
    }

    #[test]
    fn truncated_get_values_is_a_protocol_error() {
        let wire = Wire::new().record(RecordType::GetValues, 0, b"\x0e\x00FCGI_MAX");
        let mut conn: Connection = Connection::new(Config::new());
        assert_eq!(
            run(&mut conn, wire.as_slice()).err(),
            Some(ProtocolError::TruncatedGetValues)
        );
    }

    #[test]
    fn unknown_management_types_get_unknown_type() {
        let wire = Wire::new()
            .record(RecordType::Unknown(0x2a), 0, b"whatever")
            .record(
                RecordType::BeginRequest,
                0,
                &BeginRequestBody::new(Role::Responder, true).to_bytes(),
            )
            .record(RecordType::GetValuesResult, 0, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert!(events.seen.is_empty());
        assert_eq!(
            events.output(),
            &[
                0x01, 0x0b, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x2a, 0, 0, 0, 0, 0, 0,
                0, // {42}
                0x01, 0x0b, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
                0, // {BEGIN_REQUEST}
                0x01, 0x0b, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x0a, 0, 0, 0, 0, 0, 0,
                0, // {GET_VALUES_RESULT}
            ][..]
        );
        assert!(!conn.is_closed());
    }

    #[test]
    fn unknown_role_is_refused_and_its_records_ignored() {
        let wire = Wire::new()
            .begin(3, Role::Unknown(9), true)
            .record(RecordType::Params, 3, SPEC_PARAMS)
            .record(RecordType::Stdin, 3, b"body");
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert!(events.seen.is_empty());
        assert_eq!(
            events.output(),
            &EndRequestBody {
                app_status: 0,
                protocol_status: ProtocolStatus::UnknownRole
            }
            .record(3)
        );
        assert!(!conn.is_active(3));
        assert!(!conn.is_closed(), "KEEP_CONN was set");
    }

    #[test]
    fn refusal_without_keep_conn_closes_the_connection() {
        let wire =
            Wire::new()
                .begin(3, Role::Unknown(0x100), false)
                .begin(4, Role::Responder, true);
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert!(events.seen.is_empty(), "nothing is read after the close");
        assert_eq!(events.unconsumed, 16);
        assert_eq!(events.output().len(), 16);
        assert!(conn.is_closed());
    }

    #[test]
    fn second_request_without_multiplexing_gets_cant_mpx_conn() {
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .begin(2, Role::Authorizer, true)
            .record(RecordType::Params, 2, SPEC_PARAMS)
            .record(RecordType::Params, 1, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let mut events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(
            events.seen,
            [Seen::Begin(1, Role::Responder, true), Seen::ParamsEnd(1)]
        );
        assert_eq!(
            events.output(),
            &EndRequestBody {
                app_status: 0,
                protocol_status: ProtocolStatus::CantMpxConn
            }
            .record(2)
        );
        // Once request 1 ended, id 2 may begin.
        let end = conn.end_request(events.take_output(1), 0);
        assert!(!end.close_connection());
        let again = run(
            &mut conn,
            Wire::new().begin(2, Role::Authorizer, true).as_slice(),
        )
        .unwrap();
        assert_eq!(again.seen, [Seen::Begin(2, Role::Authorizer, true)]);
    }

    #[test]
    fn multiplexing_tracks_up_to_the_limit_then_overloaded() {
        let config = Config {
            multiplex: true,
            max_reqs_per_conn: 2,
            ..Config::new()
        };
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .begin(2, Role::Filter, true)
            .begin(3, Role::Responder, true);
        let mut conn: Connection<4> = Connection::new(config);
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(
            events.seen,
            [
                Seen::Begin(1, Role::Responder, true),
                Seen::Begin(2, Role::Filter, true)
            ]
        );
        assert_eq!(
            events.output(),
            &EndRequestBody {
                app_status: 0,
                protocol_status: ProtocolStatus::Overloaded
            }
            .record(3)
        );
        // The const capacity bounds the setting.
        let config = Config {
            multiplex: true,
            ..Config::new()
        };
        let mut conn: Connection<1> = Connection::new(config);
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(events.seen.len(), 1);
        assert_eq!(events.output().len(), 32, "requests 2 and 3 refused");
    }

    #[test]
    fn abort_is_reported_once() {
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::AbortRequest, 1, b"")
            .record(RecordType::AbortRequest, 1, b"")
            .record(RecordType::AbortRequest, 9, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let mut events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(
            events.seen,
            [
                Seen::Begin(1, Role::Responder, true),
                Seen::ParamsEnd(1),
                Seen::Abort(1)
            ]
        );
        assert!(conn.is_aborted(1));
        // The application answers the abort with END_REQUEST (spec 5.4).
        let end = conn.end_request(events.take_output(1), 1);
        assert_eq!(
            &end.as_bytes()[8..],
            &EndRequestBody {
                app_status: 1,
                protocol_status: ProtocolStatus::RequestComplete
            }
            .record(1)
        );
        assert!(!conn.is_aborted(1));
    }

    #[test]
    fn stdin_before_params_end_is_a_protocol_error() {
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, SPEC_PARAMS)
            .record(RecordType::Stdin, 1, b"early");
        let mut conn: Connection = Connection::new(Config::new());
        let error = ProtocolError::UnexpectedRecord {
            record_type: RecordType::Stdin,
            request_id: 1,
        };
        assert_eq!(run(&mut conn, wire.as_slice()).err(), Some(error));
        // Final: every later call reports it again.
        assert_eq!(conn.feed(b"").err(), Some(error));
        assert!(conn.is_closed());
    }

    #[test]
    fn streams_after_their_end_are_protocol_errors() {
        for (late, record_type) in [
            (RecordType::Params, RecordType::Params),
            (RecordType::Stdin, RecordType::Stdin),
        ] {
            let wire = Wire::new()
                .begin(1, Role::Responder, true)
                .record(RecordType::Params, 1, b"")
                .record(RecordType::Stdin, 1, b"")
                .record(late, 1, b"x");
            let mut conn: Connection = Connection::new(Config::new());
            assert_eq!(
                run(&mut conn, wire.as_slice()).err(),
                Some(ProtocolError::UnexpectedRecord {
                    record_type,
                    request_id: 1
                })
            );
        }
        let wire = Wire::new()
            .begin(1, Role::Filter, true)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::Data, 1, b"x");
        let mut conn: Connection = Connection::new(Config::new());
        assert!(matches!(
            run(&mut conn, wire.as_slice()),
            Err(ProtocolError::UnexpectedRecord {
                record_type: RecordType::Data,
                ..
            })
        ));
    }

    #[test]
    fn filter_receives_data_after_stdin() {
        let wire = Wire::new()
            .begin(5, Role::Filter, false)
            .record(RecordType::Params, 5, b"")
            .record(RecordType::Stdin, 5, b"form")
            .record(RecordType::Stdin, 5, b"")
            .record(RecordType::Data, 5, b"file data")
            .record(RecordType::Data, 5, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(
            events.seen,
            [
                Seen::Begin(5, Role::Filter, false),
                Seen::ParamsEnd(5),
                Seen::Stdin(5, 4),
                Seen::StdinEnd(5),
                Seen::Data(5, 9),
                Seen::DataEnd(5),
            ]
        );
    }

    #[test]
    fn records_for_unknown_ids_are_ignored() {
        let wire = Wire::new()
            .record(RecordType::Params, 7, SPEC_PARAMS)
            .record(RecordType::Stdin, 7, b"body")
            .record(RecordType::Data, 7, b"")
            .record(RecordType::Stdout, 7, b"from the wrong side")
            .record(RecordType::EndRequest, 7, &[0; 8])
            .record(RecordType::Unknown(0x63), 7, b"future");
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert!(events.seen.is_empty());
        assert!(events.output().is_empty());
        assert_eq!(events.unconsumed, 0);
    }

    #[test]
    fn wrong_version_is_a_protocol_error() {
        let mut conn: Connection = Connection::new(Config::new());
        let bytes = [0x02, 0x01, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00];
        assert_eq!(conn.feed(&bytes), Err(ProtocolError::UnsupportedVersion(2)));
        let mut conn: Connection = Connection::new(Config::new());
        assert_eq!(
            conn.feed(b"GET / HTTP/1.1\r\n"),
            Err(ProtocolError::UnsupportedVersion(b'G'))
        );
    }

    #[test]
    fn begin_request_with_a_wrong_body_length_is_a_protocol_error() {
        for length in [0u16, 7, 9, 0xffff] {
            let [l1, l0] = length.to_be_bytes();
            let bytes = [0x01, 0x01, 0x00, 0x01, l1, l0, 0x00, 0x00];
            let mut conn: Connection = Connection::new(Config::new());
            assert_eq!(
                conn.feed(&bytes),
                Err(ProtocolError::BodyLength {
                    record_type: RecordType::BeginRequest,
                    request_id: 1,
                    length,
                    expected: 8
                })
            );
        }
    }

    #[test]
    fn begin_request_for_an_active_id_is_a_protocol_error() {
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .begin(1, Role::Responder, true);
        let mut conn: Connection<2> = Connection::new(Config {
            multiplex: true,
            ..Config::new()
        });
        assert_eq!(
            run(&mut conn, wire.as_slice()).err(),
            Some(ProtocolError::DuplicateRequest(1))
        );
    }

    #[test]
    fn begin_request_waits_for_its_whole_body() {
        let wire = Wire::new().begin(1, Role::Responder, false);
        let mut conn: Connection = Connection::new(Config::new());
        for len in 0..16 {
            assert_eq!(
                conn.feed(&wire.as_slice()[..len]).unwrap(),
                Progress {
                    consumed: 0,
                    event: None
                }
            );
        }
        let progress = conn.feed(wire.as_slice()).unwrap();
        assert_eq!(progress.consumed, 16);
        assert!(matches!(
            progress.event,
            Some(Event::Begin {
                keep_conn: false,
                ..
            })
        ));
    }

    #[test]
    fn padding_is_skipped_even_when_split() {
        // A PARAMS record with 3 content bytes and 255 bytes of padding.
        let mut wire = Wire::new()
            .begin(1, Role::Responder, true)
            .raw(&[0x01, 0x04, 0x00, 0x01, 0x00, 0x03, 0xff, 0x00])
            .raw(b"\x01\x00A");
        wire = wire.raw(&[0xaa; 255]).record(RecordType::Params, 1, b"");
        let input = wire.as_slice();
        let mut conn: Connection = Connection::new(Config::new());
        let mut seen = heapless::Vec::<Seen, 8>::new();
        let mut pos = 0;
        // Feed growing windows, as a runtime with a small buffer would.
        while pos < input.len() {
            let end = (pos + 20).min(input.len());
            let progress = conn.feed(&input[pos..end]).unwrap();
            pos += progress.consumed;
            if let Some(event) = progress.event {
                let mut events = Events::default();
                events.push(event);
                seen.extend(events.seen);
            }
        }
        assert_eq!(
            seen,
            [
                Seen::Begin(1, Role::Responder, true),
                Seen::Params(1, 3),
                Seen::ParamsEnd(1)
            ]
        );
    }

    #[test]
    fn replies_wait_when_the_runtime_does_not_drain() {
        let mut wire = Wire::new();
        for _ in 0..16 {
            wire = wire.record(RecordType::Unknown(0x20), 0, b"");
        }
        let mut conn: Connection = Connection::new(Config::new());
        let progress = conn.feed(wire.as_slice()).unwrap();
        // 256 bytes hold 11 replies of 16 bytes with room for the largest
        // reply: it stops before overflowing and resumes after a drain.
        assert!(progress.consumed < wire.len);
        assert!(conn.pending_output().len() <= OUTPUT_CAPACITY);
        let stalled = conn.feed(&wire.as_slice()[progress.consumed..]).unwrap();
        assert_eq!(stalled.consumed, 0);
        let n = conn.pending_output().len();
        conn.advance_output(n);
        let rest = conn.feed(&wire.as_slice()[progress.consumed..]).unwrap();
        assert_eq!(progress.consumed + rest.consumed, wire.len);
    }

    #[test]
    fn partial_output_drain() {
        let wire = Wire::new().record(RecordType::Unknown(0x20), 0, b"");
        let mut conn: Connection = Connection::new(Config::new());
        let _ = conn.feed(wire.as_slice()).unwrap();
        assert_eq!(conn.pending_output().len(), 16);
        conn.advance_output(10);
        assert_eq!(conn.pending_output(), &[0, 0, 0, 0, 0, 0]);
        conn.advance_output(100);
        assert!(conn.pending_output().is_empty());
    }

    #[test]
    fn keep_conn_serves_many_requests() {
        let mut conn: Connection = Connection::new(Config::new());
        for round in 0..300u16 {
            let id = round % 3 + 1;
            let wire = Wire::new()
                .begin(id, Role::Responder, true)
                .record(RecordType::Params, id, SPEC_PARAMS)
                .record(RecordType::Params, id, b"")
                .record(RecordType::Stdin, id, b"");
            let mut events = run(&mut conn, wire.as_slice()).unwrap();
            assert_eq!(events.seen.len(), 4);
            let end = conn.end_request(events.take_output(id), 0);
            assert!(!end.close_connection());
        }
        assert_eq!(conn.active_requests(), 0);
    }

    #[test]
    fn rejecting_a_begun_request() {
        let wire = Wire::new().begin(1, Role::Responder, true);
        let mut conn: Connection = Connection::new(Config::new());
        let mut events = run(&mut conn, wire.as_slice()).unwrap();
        let end = conn.reject(events.take_output(1), ProtocolStatus::Overloaded);
        assert_eq!(end.as_bytes().len(), 16, "END_REQUEST alone");
        assert!(!conn.is_active(1));
    }

    #[test]
    fn mid_record_is_known() {
        let wire =
            Wire::new()
                .begin(1, Role::Responder, true)
                .record(RecordType::Params, 1, SPEC_PARAMS);
        let mut conn: Connection = Connection::new(Config::new());
        let progress = conn.feed(&wire.as_slice()[..20]).unwrap();
        assert!(!conn.is_mid_record());
        assert_eq!(progress.consumed, 16);
        let progress = conn.feed(&wire.as_slice()[16..30]).unwrap();
        assert!(matches!(progress.event, Some(Event::Params { bytes, .. }) if bytes.len() == 6));
        assert!(conn.is_mid_record());
    }

    /// Feeds `wire` to a fresh connection and reports `expects_input` and
    /// `awaits_input`; `end_early` ends request 1 after the feed.
    fn input_owed(wire: &Wire, end_early: bool) -> (bool, bool) {
        let mut conn: Connection = Connection::new(Config::new());
        let mut events = run(&mut conn, wire.as_slice()).unwrap();
        if end_early {
            conn.end_request(events.take_output(1), 0);
        }
        (conn.expects_input(), conn.awaits_input())
    }

    #[test]
    fn a_responder_is_owed_input_until_its_stdin_ends() {
        let begun = Wire::new().begin(1, Role::Responder, true);
        assert_eq!(input_owed(&begun, false), (true, true), "params to come");
        let params = begun.record(RecordType::Params, 1, b"");
        assert_eq!(input_owed(&params, false), (true, true), "stdin to come");
        let stdin = params.record(RecordType::Stdin, 1, b"");
        assert_eq!(
            input_owed(&stdin, false),
            (false, false),
            "no DATA for a Responder"
        );
    }

    #[test]
    fn a_filter_is_owed_its_data_stream_too() {
        let stdin = Wire::new()
            .begin(1, Role::Filter, true)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::Stdin, 1, b"");
        assert_eq!(input_owed(&stdin, false), (true, true));
        let data = stdin.record(RecordType::Data, 1, b"");
        assert_eq!(input_owed(&data, false), (false, false));
    }

    #[test]
    fn an_authorizer_waits_for_its_params_and_may_get_a_stdin() {
        let params =
            Wire::new()
                .begin(1, Role::Authorizer, true)
                .record(RecordType::Params, 1, b"");
        assert_eq!(
            input_owed(&params, false),
            (true, false),
            "no STDIN awaited, but lighttpd sends an empty one"
        );
        let stdin = params.record(RecordType::Stdin, 1, b"");
        assert_eq!(input_owed(&stdin, false), (false, false));
    }

    #[test]
    fn an_aborted_request_awaits_nothing_but_may_still_get_its_streams() {
        let aborted = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::AbortRequest, 1, b"");
        assert_eq!(input_owed(&aborted, false), (true, false));
    }

    #[test]
    fn the_input_of_an_ended_request_is_followed_until_its_streams_end() {
        let params =
            Wire::new()
                .begin(1, Role::Responder, false)
                .record(RecordType::Params, 1, b"");
        // Answered before its STDIN ended: the web server may still send it.
        assert_eq!(input_owed(&params, true), (true, false));
        let stdin = params.record(RecordType::Stdin, 1, b"");
        assert_eq!(input_owed(&stdin, true), (false, false));

        let mut conn: Connection = Connection::new(Config::new());
        let kept = Wire::new()
            .begin(1, Role::Filter, true)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::Stdin, 1, b"unread");
        let mut events = run(&mut conn, kept.as_slice()).unwrap();
        conn.end_request(events.take_output(1), 0);
        assert!(conn.expects_input() && !conn.awaits_input());
        let rest =
            Wire::new()
                .record(RecordType::Stdin, 1, b"more")
                .record(RecordType::Stdin, 1, b"");
        let events = run(&mut conn, rest.as_slice()).unwrap();
        assert!(
            events.seen.is_empty(),
            "an ended request's records are skipped"
        );
        assert!(conn.expects_input(), "a Filter's DATA is still to come");
        run(
            &mut conn,
            Wire::new().record(RecordType::Data, 1, b"").as_slice(),
        )
        .unwrap();
        assert!(!conn.expects_input(), "its streams ended");
    }

    #[test]
    fn without_multiplexing_a_new_request_means_the_ended_ones_are_over() {
        let mut conn: Connection = Connection::new(Config::new());
        let first = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, b"");
        let mut events = run(&mut conn, first.as_slice()).unwrap();
        conn.end_request(events.take_output(1), 0);
        assert!(conn.expects_input());
        let next = Wire::new()
            .begin(2, Role::Responder, true)
            .record(RecordType::Params, 2, b"")
            .record(RecordType::Stdin, 2, b"");
        run(&mut conn, next.as_slice()).unwrap();
        assert!(!conn.expects_input());
    }

    #[test]
    fn with_multiplexing_an_ended_request_is_followed_past_other_begins() {
        let config = Config {
            multiplex: true,
            ..Config::new()
        };
        let mut conn: Connection<4> = Connection::new(config);
        let first = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, b"");
        let mut events = run(&mut conn, first.as_slice()).unwrap();
        conn.end_request(events.take_output(1), 0);
        let second = Wire::new()
            .begin(2, Role::Responder, true)
            .record(RecordType::Params, 2, b"")
            .record(RecordType::Stdin, 2, b"");
        run(&mut conn, second.as_slice()).unwrap();
        assert!(!conn.awaits_input());
        assert!(conn.expects_input(), "request 1's STDIN may still come");
        run(
            &mut conn,
            Wire::new().record(RecordType::Stdin, 1, b"").as_slice(),
        )
        .unwrap();
        assert!(!conn.expects_input());

        // An id that begins again ends what its earlier request was owed.
        let mut events = run(
            &mut conn,
            Wire::new().begin(3, Role::Responder, true).as_slice(),
        )
        .unwrap();
        conn.end_request(events.take_output(3), 0);
        assert!(conn.expects_input());
        let again = Wire::new()
            .begin(3, Role::Responder, true)
            .record(RecordType::Params, 3, b"")
            .record(RecordType::Stdin, 3, b"");
        run(&mut conn, again.as_slice()).unwrap();
        assert!(!conn.expects_input());
    }

    #[test]
    fn a_refused_request_may_still_send_its_streams() {
        // Without KEEP_CONN the connection is done: the runtime closes it,
        // lingering, while the web server may still be sending.
        let mut conn: Connection = Connection::new(Config::new());
        run(
            &mut conn,
            Wire::new().begin(1, Role::Unknown(9), false).as_slice(),
        )
        .unwrap();
        assert!(conn.is_closed());
        assert!(conn.expects_input() && !conn.awaits_input());
        // With KEEP_CONN its streams are followed to their ends.
        let mut conn: Connection = Connection::new(Config::new());
        run(
            &mut conn,
            Wire::new().begin(1, Role::Unknown(9), true).as_slice(),
        )
        .unwrap();
        assert!(conn.expects_input() && !conn.awaits_input());
        let streams =
            Wire::new()
                .record(RecordType::Params, 1, b"")
                .record(RecordType::Stdin, 1, b"");
        run(&mut conn, streams.as_slice()).unwrap();
        assert!(!conn.expects_input());
    }

    #[test]
    fn a_record_cut_short_is_awaited() {
        // An Authorizer whose params are complete awaits nothing; the
        // STDIN record that comes all the same is awaited once begun.
        let wire = Wire::new()
            .begin(1, Role::Authorizer, true)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::Stdin, 1, b"body");
        let mut conn: Connection = Connection::new(Config::new());
        let whole = run(&mut conn, &wire.as_slice()[..24]).unwrap();
        assert_eq!(whole.unconsumed, 0);
        assert!(!conn.awaits_input());
        run(&mut conn, &wire.as_slice()[24..wire.len - 1]).unwrap();
        assert!(conn.is_mid_record());
        assert!(conn.awaits_input() && conn.expects_input());
    }

    #[test]
    fn flags_other_than_keep_conn_are_ignored() {
        let mut body = BeginRequestBody::new(Role::Responder, false);
        body.flags = 0xfe;
        let wire = Wire::new().raw(&body.record(1));
        let mut conn: Connection = Connection::new(Config::new());
        let events = run(&mut conn, wire.as_slice()).unwrap();
        assert_eq!(events.seen, [Seen::Begin(1, Role::Responder, false)]);
        body.flags = 0xff;
        assert_eq!(body.flags & KEEP_CONN, KEEP_CONN);
    }

    #[test]
    fn chunks_are_the_tail_of_the_consumed_input() {
        let wire = Wire::new()
            .begin(1, Role::Responder, true)
            .record(RecordType::Params, 1, SPEC_PARAMS)
            .record(RecordType::Params, 1, b"")
            .record(RecordType::Stdin, 1, b"0123456789");
        let input = wire.as_slice();
        let mut conn: Connection = Connection::new(Config::new());
        let mut pos = 0;
        let mut chunks = 0;
        // Windows ending anywhere, so chunks are cut at every length.
        for end in 1..=input.len() {
            loop {
                let window = &input[pos..end];
                let progress = conn.feed(window).unwrap();
                if let Some(Event::Params { bytes, .. } | Event::Stdin { bytes, .. }) =
                    &progress.event
                {
                    let tail = &window[progress.consumed - bytes.len()..progress.consumed];
                    assert_eq!(tail.as_ptr(), bytes.as_ptr());
                    chunks += 1;
                }
                pos += progress.consumed;
                if progress.consumed == 0 && progress.event.is_none() {
                    break;
                }
            }
        }
        assert!(chunks > 2);
        assert_eq!(pos, input.len());
    }

    #[test]
    fn decimal_digits() {
        let mut digits = [0u8; 10];
        assert_eq!(decimal(0, &mut digits), b"0");
        assert_eq!(decimal(7, &mut digits), b"7");
        assert_eq!(decimal(1_000, &mut digits), b"1000");
        assert_eq!(decimal(u32::MAX, &mut digits), b"4294967295");
    }
}
