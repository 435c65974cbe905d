//! Name-value pairs (spec 3.4): the content of FCGI_PARAMS and
//! FCGI_GET_VALUES(_RESULT) records.
//!
//! A length of up to 127 is one byte; a longer one is four bytes, big-endian,
//! with the high bit of the first byte set:
//!
//! ```text
//! 0x0b 0x02 "SERVER_PORT" "80"                  one-byte lengths (11, 2)
//! 0x0b 0x80 0x00 0x01 0x00 "COOKIE_NAME" ...    4-byte value length (256)
//! ```
//!
//! [`NameValue::parse`] reads one whole pair from contiguous bytes.
//! [`Params`](crate::Params) and the connection's GET_VALUES reader take
//! pairs split anywhere (across records, inside a name, value or length)
//! through one crate-private streaming reader that copies nothing.

use nom::IResult;
use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u32};

use crate::error::EncodeError;

/// The largest name or value length the format can carry (31 bits).
pub const MAX_LENGTH: usize = 0x7fff_ffff;

/// One name-value pair, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NameValue<'a> {
    /// The name's bytes.
    pub name: &'a [u8],
    /// The value's bytes.
    pub value: &'a [u8],
}

impl<'a> NameValue<'a> {
    /// A pair from a name and a value.
    pub const fn new(name: &'a [u8], value: &'a [u8]) -> Self {
        NameValue { name, value }
    }

    /// The name as UTF-8, if it is.
    pub fn name_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.name).ok()
    }

    /// The value as UTF-8, if it is.
    pub fn value_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.value).ok()
    }

    /// Parses one pair from the front of `input` (streaming: a partial pair
    /// gives `Err::Incomplete` with the number of bytes still needed).
    pub fn parse(input: &'a [u8]) -> IResult<&'a [u8], NameValue<'a>> {
        let (input, (name_len, value_len)) = parse_lengths(input)?;
        let (input, name) = take(name_len).parse(input)?;
        let (input, value) = take(value_len).parse(input)?;
        Ok((input, NameValue { name, value }))
    }

    /// The number of bytes [`NameValue::encode`] writes.
    pub const fn encoded_len(&self) -> usize {
        length_len(self.name.len())
            + length_len(self.value.len())
            + self.name.len()
            + self.value.len()
    }

    /// Writes the pair into the front of `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        for len in [self.name.len(), self.value.len()] {
            if len > MAX_LENGTH {
                return Err(EncodeError::TooLong {
                    length: len,
                    max: MAX_LENGTH,
                });
            }
        }
        let total = self.encoded_len();
        let out = out
            .get_mut(..total)
            .ok_or(EncodeError::BufferTooSmall { required: total })?;
        let mut at = 0;
        for len in [self.name.len(), self.value.len()] {
            let (bytes, n) = length_bytes(len);
            out[at..at + n].copy_from_slice(&bytes[..n]);
            at += n;
        }
        out[at..at + self.name.len()].copy_from_slice(self.name);
        at += self.name.len();
        out[at..].copy_from_slice(self.value);
        Ok(total)
    }
}

/// Parses one length: a byte with the high bit clear, or four bytes with it
/// set (the bit is masked off).
pub fn parse_length(input: &[u8]) -> IResult<&[u8], u32> {
    let (_, first) = be_u8(input)?;
    if first & 0x80 == 0 {
        let (input, len) = be_u8(input)?;
        Ok((input, u32::from(len)))
    } else {
        let (input, len) = be_u32(input)?;
        Ok((input, len & 0x7fff_ffff))
    }
}

/// Parses a pair's two lengths: the name's, then the value's.
pub fn parse_lengths(input: &[u8]) -> IResult<&[u8], (u32, u32)> {
    let (input, name_len) = parse_length(input)?;
    let (input, value_len) = parse_length(input)?;
    Ok((input, (name_len, value_len)))
}

/// How many bytes a length takes on the wire.
const fn length_len(len: usize) -> usize {
    if len <= 0x7f { 1 } else { 4 }
}

/// A length's wire bytes and how many of them are used.
fn length_bytes(len: usize) -> ([u8; 4], usize) {
    match u8::try_from(len) {
        Ok(byte) if byte <= 0x7f => ([byte, 0, 0, 0], 1),
        _ => {
            let wide = u32::try_from(len).unwrap_or(u32::MAX) | 0x8000_0000;
            (wide.to_be_bytes(), 4)
        }
    }
}

/// Receives the pieces of pairs from a [`PairStream`].
///
/// For each pair: `begin` with both lengths (before any of its bytes), then
/// its name in one or more pieces, its value likewise, then `end`.
pub(crate) trait PairSink {
    /// What the sink refuses a pair with.
    type Error;
    /// A pair with these lengths starts.
    fn begin(&mut self, name_len: usize, value_len: usize) -> Result<(), Self::Error>;
    /// The next piece of the current pair's name.
    fn name(&mut self, bytes: &[u8]);
    /// The next piece of the current pair's value.
    fn value(&mut self, bytes: &[u8]);
    /// The current pair is complete.
    fn end(&mut self) -> Result<(), Self::Error>;

    /// A whole pair in one piece: `bytes` is its name (the first
    /// `name_len` bytes) and its value, as they follow each other on the
    /// wire. The same as `begin`, `name`, `value` and `end`; a sink may
    /// take it at once.
    fn pair(&mut self, name_len: usize, bytes: &[u8]) -> Result<(), Self::Error> {
        let (name, value) = bytes.split_at(name_len.min(bytes.len()));
        self.begin(name.len(), value.len())?;
        if !name.is_empty() {
            self.name(name);
        }
        if !value.is_empty() {
            self.value(value);
        }
        self.end()
    }
}

/// Where a [`PairStream`] is inside the pair it is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum PairState {
    /// Reading the lengths; `buf[..len]` holds the bytes seen so far when
    /// they were split across inputs.
    Lengths { buf: [u8; 8], len: usize },
    /// Reading the name; `value_len` follows it.
    Name { remaining: usize, value_len: usize },
    /// Reading the value.
    Value { remaining: usize },
}

/// Reads name-value pairs from a stream whose bytes arrive in pieces of any
/// size: split across records, inside a name or value, or inside a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct PairStream {
    state: PairState,
}

impl PairStream {
    /// A stream positioned before its first pair.
    pub(crate) const fn new() -> Self {
        PairStream {
            state: PairState::Lengths {
                buf: [0; 8],
                len: 0,
            },
        }
    }

    /// Whether the stream is between pairs (nothing of a pair read yet).
    pub(crate) const fn is_between_pairs(&self) -> bool {
        matches!(self.state, PairState::Lengths { len: 0, .. })
    }

    /// Hands the pairs' pieces in `input` to `sink`, keeping the position
    /// inside a pair for the next call.
    pub(crate) fn feed<S: PairSink>(
        &mut self,
        mut input: &[u8],
        sink: &mut S,
    ) -> Result<(), S::Error> {
        while !input.is_empty() {
            match &mut self.state {
                PairState::Lengths { buf, len } => {
                    if *len == 0 {
                        // Fast path: both lengths are in this input.
                        if let Ok((rest, (name_len, value_len))) = parse_lengths(input) {
                            let (name_len, value_len) = (name_len as usize, value_len as usize);
                            // The whole pair too (as nginx sends them, all
                            // in one record): handed over in one piece.
                            let whole = name_len
                                .checked_add(value_len)
                                .and_then(|pair_len| rest.split_at_checked(pair_len));
                            if let Some((pair, after)) = whole {
                                sink.pair(name_len, pair)?;
                                input = after;
                                continue;
                            }
                            input = rest;
                            self.start(name_len, value_len, sink)?;
                            continue;
                        }
                    }
                    let have = *len;
                    let need = match parse_lengths(&buf[..have]) {
                        Err(nom::Err::Incomplete(nom::Needed::Size(n))) => n.get(),
                        _ => 1,
                    };
                    let take = need.min(input.len()).min(buf.len() - have);
                    buf[have..have + take].copy_from_slice(&input[..take]);
                    *len = have + take;
                    input = &input[take..];
                    if let Ok((_, (name_len, value_len))) = parse_lengths(&buf[..have + take]) {
                        self.start(name_len as usize, value_len as usize, sink)?;
                    }
                }
                PairState::Name {
                    remaining,
                    value_len,
                } => {
                    let take = (*remaining).min(input.len());
                    sink.name(&input[..take]);
                    input = &input[take..];
                    *remaining -= take;
                    if *remaining == 0 {
                        let value_len = *value_len;
                        self.after_name(value_len, sink)?;
                    }
                }
                PairState::Value { remaining } => {
                    let take = (*remaining).min(input.len());
                    sink.value(&input[..take]);
                    input = &input[take..];
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = PairStream::new().state;
                        sink.end()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start<S: PairSink>(
        &mut self,
        name_len: usize,
        value_len: usize,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        // Until the sink accepts the pair, the stream stays between pairs.
        self.state = PairStream::new().state;
        sink.begin(name_len, value_len)?;
        if name_len > 0 {
            self.state = PairState::Name {
                remaining: name_len,
                value_len,
            };
            Ok(())
        } else {
            self.after_name(value_len, sink)
        }
    }

    fn after_name<S: PairSink>(&mut self, value_len: usize, sink: &mut S) -> Result<(), S::Error> {
        if value_len > 0 {
            self.state = PairState::Value {
                remaining: value_len,
            };
            Ok(())
        } else {
            self.state = PairStream::new().state;
            sink.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nom::{Err, Needed};

    #[test]
    fn spec_example_pairs() {
        // From appendix B: "\013\002SERVER_PORT80\013\016SERVER_ADDR199.170.183.42"
        let bytes = b"\x0b\x02SERVER_PORT80\x0b\x0eSERVER_ADDR199.170.183.42";
        let (rest, first) = NameValue::parse(bytes).unwrap();
        assert_eq!(first, NameValue::new(b"SERVER_PORT", b"80"));
        let (rest, second) = NameValue::parse(rest).unwrap();
        assert_eq!(second.name_str(), Some("SERVER_ADDR"));
        assert_eq!(second.value_str(), Some("199.170.183.42"));
        assert!(rest.is_empty());
    }

    #[test]
    fn all_four_length_forms() {
        let long = [b'x'; 300];
        let cases: [(&[u8], &[u8], &[u8]); 4] = [
            (b"N", b"V", &[0x01, 0x01]),                    // 11
            (b"N", &long, &[0x01, 0x80, 0x00, 0x01, 0x2c]), // 14
            (&long, b"V", &[0x80, 0x00, 0x01, 0x2c, 0x01]), // 41
            (
                &long,
                &long,
                &[0x80, 0x00, 0x01, 0x2c, 0x80, 0x00, 0x01, 0x2c],
            ), // 44
        ];
        for (name, value, prefix) in cases {
            let pair = NameValue::new(name, value);
            let mut buf = [0u8; 700];
            let n = pair.encode(&mut buf).unwrap();
            assert_eq!(n, pair.encoded_len());
            assert_eq!(&buf[..prefix.len()], prefix);
            let (rest, parsed) = NameValue::parse(&buf[..n]).unwrap();
            assert!(rest.is_empty());
            assert_eq!(parsed, pair);
        }
    }

    #[test]
    fn length_127_is_one_byte_and_128_is_four() {
        let v127 = [b'v'; 127];
        let v128 = [b'v'; 128];
        assert_eq!(NameValue::new(b"a", &v127).encoded_len(), 2 + 1 + 127);
        assert_eq!(NameValue::new(b"a", &v128).encoded_len(), 5 + 1 + 128);
        // A four-byte length may also carry a small value.
        let (_, len) = parse_length(&[0x80, 0x00, 0x00, 0x05]).unwrap();
        assert_eq!(len, 5);
        // The high bit is masked off.
        let (_, len) = parse_length(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(len, 0x7fff_ffff);
    }

    #[test]
    fn partial_pairs_say_how_much_is_missing() {
        assert_eq!(NameValue::parse(&[]), Err(Err::Incomplete(Needed::new(1))));
        assert_eq!(
            NameValue::parse(&[0x80, 0x00]),
            Err(Err::Incomplete(Needed::new(2)))
        );
        assert_eq!(
            NameValue::parse(&[0x03, 0x02, b'a']),
            Err(Err::Incomplete(Needed::new(2)))
        );
        assert_eq!(
            NameValue::parse(&[0x01, 0x02, b'a', b'b']),
            Err(Err::Incomplete(Needed::new(1)))
        );
    }

    #[test]
    fn encode_reports_required_size() {
        let mut small = [0u8; 3];
        assert_eq!(
            NameValue::new(b"ab", b"cd").encode(&mut small),
            Err(EncodeError::BufferTooSmall { required: 6 })
        );
    }

    /// Collects pairs from a stream for the tests.
    struct Collect {
        bytes: [u8; 1024],
        len: usize,
        pairs: [(usize, usize, usize); 16],
        count: usize,
        current: (usize, usize, usize),
    }

    impl Default for Collect {
        fn default() -> Self {
            Collect {
                bytes: [0; 1024],
                len: 0,
                pairs: [(0, 0, 0); 16],
                count: 0,
                current: (0, 0, 0),
            }
        }
    }

    impl PairSink for Collect {
        type Error = ();
        fn begin(&mut self, name_len: usize, value_len: usize) -> Result<(), ()> {
            self.current = (self.len, name_len, value_len);
            Ok(())
        }
        fn name(&mut self, bytes: &[u8]) {
            self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        fn value(&mut self, bytes: &[u8]) {
            self.name(bytes);
        }
        fn end(&mut self) -> Result<(), ()> {
            self.pairs[self.count] = self.current;
            self.count += 1;
            Ok(())
        }
    }

    impl Collect {
        fn pair(&self, i: usize) -> (&[u8], &[u8]) {
            let (start, n, v) = self.pairs[i];
            (
                &self.bytes[start..start + n],
                &self.bytes[start + n..start + n + v],
            )
        }
    }

    #[test]
    fn stream_reads_pairs_fed_one_byte_at_a_time() {
        let long = [b'L'; 200];
        let mut wire = [0u8; 512];
        let mut n = 0;
        for pair in [
            NameValue::new(b"SERVER_PORT", b"80"),
            NameValue::new(b"EMPTY", b""),
            NameValue::new(b"", b""),
            NameValue::new(&long, b"x"),
            NameValue::new(b"COOKIE", &long),
        ] {
            n += pair.encode(&mut wire[n..]).unwrap();
        }
        let mut stream = PairStream::new();
        let mut sink = Collect::default();
        for byte in &wire[..n] {
            stream.feed(core::slice::from_ref(byte), &mut sink).unwrap();
        }
        assert!(stream.is_between_pairs());
        assert_eq!(sink.count, 5);
        assert_eq!(sink.pair(0), (&b"SERVER_PORT"[..], &b"80"[..]));
        assert_eq!(sink.pair(1), (&b"EMPTY"[..], &b""[..]));
        assert_eq!(sink.pair(2), (&b""[..], &b""[..]));
        assert_eq!(sink.pair(3), (&long[..], &b"x"[..]));
        assert_eq!(sink.pair(4), (&b"COOKIE"[..], &long[..]));
    }

    #[test]
    fn stream_stops_between_pairs_only_at_pair_ends() {
        let mut stream = PairStream::new();
        let mut sink = Collect::default();
        stream.feed(&[0x80, 0x00], &mut sink).unwrap();
        assert!(!stream.is_between_pairs());
        stream.feed(&[0x00, 0x01, 0x01, b'a'], &mut sink).unwrap();
        assert!(!stream.is_between_pairs());
        stream.feed(b"b", &mut sink).unwrap();
        assert!(stream.is_between_pairs());
        assert_eq!(sink.pair(0), (&b"a"[..], &b"b"[..]));
    }
}
