//! The request's params (its CGI environment), collected from the PARAMS
//! stream into fixed-capacity storage (spec 5.2, 3.4).
//!
//! Names and values are copied once, from the connection's input into one
//! byte arena; an index of pairs points into it. Both capacities are const
//! generics with defaults sized for what nginx and Apache send with large
//! cookies. Running out of either is a [`ParamsError`], never a panic and
//! never a silent truncation: the request is refused with
//! [`ParamsError::http_status`].

use core::fmt;

use heapless::vec::VecView;

use crate::error::ParamsError;
use crate::name_value::{NameValue, PairSink, PairStream};

/// Default arena size in bytes: 64 KiB. nginx's default
/// `large_client_header_buffers` (4 × 8 KiB) fills at most 32 KiB with request
/// headers; the CGI variables and `HTTP_` names come on top of that.
pub const DEFAULT_PARAMS_BYTES: usize = 64 * 1024;

/// Default number of pairs: 256. Apache allows 100 request headers by default
/// (`LimitRequestFields`), and servers add about 30 CGI variables.
pub const DEFAULT_PARAMS_PAIRS: usize = 256;

/// Where one pair lives in the arena: the name at `start`, the value right
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Entry {
    start: u32,
    name_len: u32,
    value_len: u32,
}

impl Entry {
    fn name<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let start = self.start as usize;
        &bytes[start..start + self.name_len as usize]
    }

    fn pair<'a>(&self, bytes: &'a [u8]) -> NameValue<'a> {
        let start = self.start as usize;
        let value_start = start + self.name_len as usize;
        NameValue {
            name: &bytes[start..value_start],
            value: &bytes[value_start..value_start + self.value_len as usize],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum State {
    Collecting,
    Complete,
    Failed(ParamsError),
}

/// A request's params: name-value pairs in a fixed-capacity arena.
///
/// `BYTES` bounds the names and values together, `PAIRS` the number of pairs.
/// Lookups return slices borrowed from the arena. Names are kept exactly as
/// received (CGI names are upper case by convention); when a name appears
/// twice, [`Params::get`] returns the last value, as PHP-FPM does.
///
/// ```
/// use simple_fastcgi_core::{NameValue, Params};
///
/// let mut wire = [0u8; 64];
/// let mut n = 0;
/// for (name, value) in [("REQUEST_METHOD", "GET"), ("QUERY_STRING", "a=1")] {
///     n += NameValue::new(name.as_bytes(), value.as_bytes()).encode(&mut wire[n..]).expect("fits");
/// }
/// let mut params = Params::<1024, 16>::new();
/// // The stream may be split anywhere, even inside a length.
/// params.feed(&wire[..5])?;
/// params.feed(&wire[5..n])?;
/// params.finish()?;
/// assert_eq!(params.get_str("QUERY_STRING"), Some("a=1"));
/// assert_eq!(params.len(), 2);
/// # Ok::<(), simple_fastcgi_core::ParamsError>(())
/// ```
// In declaration order, the arrays last: `new` stores zeros only in front
// of the arena. With the fields reordered, zeroed fields came after the
// arena too, and the compiler zero-filled all of it (64 KiB by default) in
// one memset, so every arena made touched every page of it.
#[repr(C)]
pub struct Params<
    const BYTES: usize = DEFAULT_PARAMS_BYTES,
    const PAIRS: usize = DEFAULT_PARAMS_PAIRS,
> {
    current: Entry,
    stream: PairStream,
    state: State,
    entries: heapless::Vec<Entry, PAIRS>,
    bytes: heapless::Vec<u8, BYTES>,
}

/// Iterator over a [`Params`]' pairs in the order they were received.
pub struct Iter<'a> {
    bytes: &'a [u8],
    entries: core::slice::Iter<'a, Entry>,
}

impl<const BYTES: usize, const PAIRS: usize> Params<BYTES, PAIRS> {
    /// The arena's capacity in bytes of names and values.
    pub const CAPACITY_BYTES: usize = BYTES;
    /// The arena's capacity in pairs.
    pub const CAPACITY_PAIRS: usize = PAIRS;

    /// Empty params.
    pub const fn new() -> Self {
        const { assert!(BYTES <= u32::MAX as usize, "params arena larger than 4 GiB") };
        Params {
            bytes: heapless::Vec::new(),
            entries: heapless::Vec::new(),
            current: Entry {
                start: 0,
                name_len: 0,
                value_len: 0,
            },
            stream: PairStream::new(),
            state: State::Collecting,
        }
    }

    /// Empties the params for the next request, keeping the storage.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.stream = PairStream::new();
        self.state = State::Collecting;
    }

    /// Adds the next piece of the PARAMS stream's content. Pieces may split
    /// pairs anywhere.
    ///
    /// After an error the params stay failed (every later call returns the
    /// same error) until [`Params::clear`].
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ParamsError> {
        if let State::Failed(error) = self.state {
            return Err(error);
        }
        self.state = State::Collecting;
        let mut sink = ArenaSink {
            bytes: self.bytes.as_mut_view(),
            entries: self.entries.as_mut_view(),
            current: &mut self.current,
        };
        match self.stream.feed(bytes, &mut sink) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.state = State::Failed(error);
                Err(error)
            }
        }
    }

    /// Marks the end of the PARAMS stream: fails if a pair was cut off.
    pub fn finish(&mut self) -> Result<(), ParamsError> {
        match self.state {
            State::Failed(error) => Err(error),
            _ if !self.stream.is_between_pairs() => {
                self.state = State::Failed(ParamsError::Truncated);
                Err(ParamsError::Truncated)
            }
            _ => {
                self.state = State::Complete;
                Ok(())
            }
        }
    }

    /// Whether [`Params::finish`] succeeded since the last change.
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// The value of the last pair named `name`.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let name = name.as_ref();
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.name_len as usize == name.len() && entry.name(&self.bytes) == name)
            .map(|entry| entry.pair(&self.bytes).value)
    }

    /// The value of the last pair named `name`, if it is UTF-8.
    pub fn get_str(&self, name: impl AsRef<[u8]>) -> Option<&str> {
        self.get(name)
            .and_then(|value| core::str::from_utf8(value).ok())
    }

    /// Whether a pair named `name` was received.
    pub fn contains(&self, name: impl AsRef<[u8]>) -> bool {
        self.get(name).is_some()
    }

    /// The pairs in the order they were received.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            bytes: &self.bytes,
            entries: self.entries.iter(),
        }
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the arena in use by names and values.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

impl<const BYTES: usize, const PAIRS: usize> Default for Params<BYTES, PAIRS> {
    fn default() -> Self {
        Params::new()
    }
}

impl<const BYTES: usize, const PAIRS: usize> fmt::Debug for Params<BYTES, PAIRS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Text<'a>(&'a [u8]);
        impl fmt::Debug for Text<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match core::str::from_utf8(self.0) {
                    Ok(text) => fmt::Debug::fmt(text, f),
                    Err(_) => fmt::Debug::fmt(self.0, f),
                }
            }
        }
        f.debug_map()
            .entries(self.iter().map(|pair| (Text(pair.name), Text(pair.value))))
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl<const BYTES: usize, const PAIRS: usize> defmt::Format for Params<BYTES, PAIRS> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Params {{ pairs: {}, bytes: {} }}",
            self.len(),
            self.byte_len()
        );
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = NameValue<'a>;

    fn next(&mut self) -> Option<NameValue<'a>> {
        self.entries.next().map(|entry| entry.pair(self.bytes))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a, const BYTES: usize, const PAIRS: usize> IntoIterator for &'a Params<BYTES, PAIRS> {
    type Item = NameValue<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Stores pairs from a [`PairStream`]; capacity-independent so the code exists
/// once for every `Params<BYTES, PAIRS>`.
struct ArenaSink<'a> {
    bytes: &'a mut VecView<u8>,
    entries: &'a mut VecView<Entry>,
    current: &'a mut Entry,
}

impl PairSink for ArenaSink<'_> {
    type Error = ParamsError;

    fn begin(&mut self, name_len: usize, value_len: usize) -> Result<(), ParamsError> {
        *self.current = self.entry(name_len, value_len)?;
        Ok(())
    }

    fn name(&mut self, bytes: &[u8]) {
        // Room was checked for the whole pair in `begin`.
        let _fits = self.bytes.extend_from_slice(bytes);
        debug_assert!(_fits.is_ok());
    }

    fn value(&mut self, bytes: &[u8]) {
        self.name(bytes);
    }

    fn end(&mut self) -> Result<(), ParamsError> {
        // Room was checked in `begin`.
        self.push(*self.current)
    }

    fn pair(&mut self, name_len: usize, bytes: &[u8]) -> Result<(), ParamsError> {
        let entry = self.entry(name_len, bytes.len().saturating_sub(name_len))?;
        // Name and value follow each other in the arena as on the wire:
        // one copy for both.
        self.name(bytes);
        self.push(entry)
    }
}

impl ArenaSink<'_> {
    /// Stores a pair's entry once its bytes are in the arena.
    fn push(&mut self, entry: Entry) -> Result<(), ParamsError> {
        self.entries.push(entry).map_err(|_| ParamsError::TooMany {
            capacity: self.entries.capacity(),
        })
    }

    /// The entry of a pair with these lengths, to be stored next; refused
    /// when the name is empty or the pair does not fit.
    fn entry(&self, name_len: usize, value_len: usize) -> Result<Entry, ParamsError> {
        if name_len == 0 {
            return Err(ParamsError::EmptyName);
        }
        if self.entries.is_full() {
            return Err(ParamsError::TooMany {
                capacity: self.entries.capacity(),
            });
        }
        let required = self
            .bytes
            .len()
            .saturating_add(name_len)
            .saturating_add(value_len);
        let capacity = self.bytes.capacity();
        if required > capacity {
            return Err(ParamsError::TooLarge { required, capacity });
        }
        // All three are at most the capacity, which fits in u32 (asserted in
        // `new`), so the conversions cannot fail.
        let too_large = |_| ParamsError::TooLarge { required, capacity };
        Ok(Entry {
            start: u32::try_from(self.bytes.len()).map_err(too_large)?,
            name_len: u32::try_from(name_len).map_err(too_large)?,
            value_len: u32::try_from(value_len).map_err(too_large)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_pairs<const N: usize>(pairs: &[(&[u8], &[u8])], out: &mut [u8; N]) -> usize {
        let mut n = 0;
        for (name, value) in pairs {
            n += NameValue::new(name, value).encode(&mut out[n..]).unwrap();
        }
        n
    }

    #[test]
    fn stores_and_finds_pairs() {
        let mut wire = [0u8; 256];
        let n = encode_pairs(
            &[
                (b"SCRIPT_NAME", b"/index.php"),
                (b"HTTP_HOST", b"example.com"),
                (b"EMPTY", b""),
                (b"BINARY", &[0xff, 0x00]),
            ],
            &mut wire,
        );
        let mut params = Params::<256, 8>::new();
        params.feed(&wire[..n]).unwrap();
        params.finish().unwrap();
        assert!(params.is_complete());
        assert_eq!(params.len(), 4);
        assert_eq!(params.get("HTTP_HOST"), Some(&b"example.com"[..]));
        assert_eq!(params.get_str("EMPTY"), Some(""));
        assert_eq!(params.get("BINARY"), Some(&[0xff, 0x00][..]));
        assert_eq!(params.get_str("BINARY"), None, "not UTF-8");
        assert_eq!(params.get("http_host"), None, "names match exactly");
        assert!(!params.contains("MISSING"));
        let names: heapless::Vec<&[u8], 8> = params.iter().map(|pair| pair.name).collect();
        assert_eq!(
            names,
            [&b"SCRIPT_NAME"[..], b"HTTP_HOST", b"EMPTY", b"BINARY"]
        );
        assert_eq!(params.byte_len(), 11 + 10 + 9 + 11 + 5 + 6 + 2);
    }

    #[test]
    fn last_duplicate_wins() {
        let mut wire = [0u8; 64];
        let n = encode_pairs(&[(b"A", b"1"), (b"B", b"2"), (b"A", b"3")], &mut wire);
        let mut params = Params::<64, 8>::new();
        params.feed(&wire[..n]).unwrap();
        assert_eq!(params.get_str("A"), Some("3"));
        assert_eq!(params.len(), 3, "every pair is kept for iteration");
    }

    #[test]
    fn byte_capacity_is_exact_and_overflow_is_an_error() {
        let mut wire = [0u8; 64];
        // 2 + 2 + 4 = 8 bytes of names and values: fills an 8-byte arena.
        let n = encode_pairs(&[(b"AB", b"CD"), (b"EFGH", b"")], &mut wire);
        let mut params = Params::<8, 4>::new();
        params.feed(&wire[..n]).unwrap();
        params.finish().unwrap();
        let n = encode_pairs(&[(b"X", b"")], &mut wire);
        assert_eq!(
            params.feed(&wire[..n]),
            Err(ParamsError::TooLarge {
                required: 9,
                capacity: 8
            })
        );
        // Sticky until cleared, and reported again by `finish`.
        assert_eq!(
            params.feed(b""),
            Err(ParamsError::TooLarge {
                required: 9,
                capacity: 8
            })
        );
        assert_eq!(
            params.finish(),
            Err(ParamsError::TooLarge {
                required: 9,
                capacity: 8
            })
        );
        assert_eq!(params.len(), 2, "nothing partial was stored");
        params.clear();
        params.feed(&wire[..n]).unwrap();
        assert_eq!(params.get_str("X"), Some(""));
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_any_copy() {
        // A 4-byte value length of 2^31 - 1 is refused at once.
        let wire = [0x01, 0xff, 0xff, 0xff, 0xff, b'A'];
        let mut params = Params::<1024, 4>::new();
        assert_eq!(
            params.feed(&wire),
            Err(ParamsError::TooLarge {
                required: 1 + 0x7fff_ffff,
                capacity: 1024
            })
        );
        assert_eq!(
            ParamsError::TooLarge {
                required: 0,
                capacity: 0
            }
            .http_status(),
            431
        );
    }

    #[test]
    fn pair_count_limit() {
        let mut wire = [0u8; 64];
        let n = encode_pairs(&[(b"A", b""), (b"B", b""), (b"C", b"")], &mut wire);
        let mut params = Params::<64, 2>::new();
        assert_eq!(
            params.feed(&wire[..n]),
            Err(ParamsError::TooMany { capacity: 2 })
        );
        assert_eq!(ParamsError::TooMany { capacity: 2 }.http_status(), 431);
    }

    #[test]
    fn empty_name_is_invalid() {
        let mut params = Params::<64, 2>::new();
        assert_eq!(
            params.feed(&[0x00, 0x01, b'v']),
            Err(ParamsError::EmptyName)
        );
        assert_eq!(ParamsError::EmptyName.http_status(), 400);
    }

    #[test]
    fn a_pair_refused_whole_is_refused_in_pieces_too() {
        // A pair that arrives whole is taken in one piece, one that is
        // split piece by piece: both ways end the same.
        fn outcome(wire: &[u8], piece: usize) -> (Result<(), ParamsError>, usize) {
            let mut params = Params::<8, 2>::new();
            let result = wire
                .chunks(piece)
                .try_for_each(|chunk| params.feed(chunk))
                .and_then(|()| params.finish());
            (result, params.len())
        }
        let mut wire = [0u8; 64];
        for pairs in [
            &[(&b"AB"[..], &b"CD"[..]), (b"EFGHI", b"")][..],
            &[(b"A", b""), (b"B", b""), (b"C", b"")],
            &[(b"A", b"1"), (b"", b"v")],
            &[(b"A", b"1"), (b"B", b"2")],
        ] {
            let n = encode_pairs(pairs, &mut wire);
            let whole = outcome(&wire[..n], n);
            for piece in 1..n {
                assert_eq!(
                    outcome(&wire[..n], piece),
                    whole,
                    "{pairs:?} in pieces of {piece}"
                );
            }
        }
        let n = encode_pairs(&[(b"AB", b"CD"), (b"EFGHI", b"")], &mut wire);
        assert_eq!(
            outcome(&wire[..n], n),
            (
                Err(ParamsError::TooLarge {
                    required: 9,
                    capacity: 8
                }),
                1
            )
        );
    }

    #[test]
    fn truncated_pair_fails_at_finish() {
        let mut params = Params::<64, 2>::new();
        params.feed(&[0x04, 0x01, b'N', b'A']).unwrap();
        assert!(!params.is_complete());
        assert_eq!(params.finish(), Err(ParamsError::Truncated));
        assert_eq!(ParamsError::Truncated.http_status(), 400);
        let mut params = Params::<64, 2>::new();
        params.feed(&[0x80, 0x00]).unwrap();
        assert_eq!(
            params.finish(),
            Err(ParamsError::Truncated),
            "cut inside a length"
        );
    }

    #[test]
    fn split_at_every_position_gives_the_same_params() {
        let cookie = [b'c'; 300];
        let mut wire = [0u8; 512];
        let n = encode_pairs(
            &[
                (b"REQUEST_METHOD", b"POST"),
                (b"HTTP_COOKIE", &cookie),
                (b"Q", b""),
            ],
            &mut wire,
        );
        for split in 0..=n {
            let mut params = Params::<512, 8>::new();
            params.feed(&wire[..split]).unwrap();
            params.feed(&wire[split..n]).unwrap();
            params.finish().unwrap();
            assert_eq!(
                params.get_str("REQUEST_METHOD"),
                Some("POST"),
                "split at {split}"
            );
            assert_eq!(params.get("HTTP_COOKIE"), Some(&cookie[..]));
            assert_eq!(params.get_str("Q"), Some(""));
        }
    }
}
