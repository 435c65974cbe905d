//! A builder for the bytes a web server sends, and the request nginx sends
//! with its stock `fastcgi_params`.

use simple_fastcgi_core::{BeginRequestBody, Header, NameValue, Record, RecordType, Role};

/// Bytes of FastCGI records, appended in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wire {
    bytes: Vec<u8>,
}

impl Wire {
    /// No records yet.
    pub fn new() -> Self {
        Wire::default()
    }

    /// Appends raw bytes (for malformed input).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Appends one record with standard padding.
    pub fn record(mut self, record_type: RecordType, request_id: u16, content: &[u8]) -> Self {
        let mut buf = vec![0u8; content.len() + 16];
        let n = Record::encode(record_type, request_id, content, &mut buf)
            .expect("test records hold at most 65535 bytes");
        self.bytes.extend_from_slice(&buf[..n]);
        self
    }

    /// Appends one record with the given padding length (any value 0..=255).
    pub fn record_padded(
        mut self,
        record_type: RecordType,
        request_id: u16,
        content: &[u8],
        padding: u8,
    ) -> Self {
        let mut header = Header::new(
            record_type,
            request_id,
            u16::try_from(content.len()).expect("test records hold at most 65535 bytes"),
        );
        header.padding_length = padding;
        self.bytes.extend_from_slice(&header.to_bytes());
        self.bytes.extend_from_slice(content);
        self.bytes
            .extend(std::iter::repeat_n(0u8, usize::from(padding)));
        self
    }

    /// FCGI_BEGIN_REQUEST.
    pub fn begin(self, request_id: u16, role: Role, keep_conn: bool) -> Self {
        self.raw(&BeginRequestBody::new(role, keep_conn).record(request_id))
    }

    /// The whole PARAMS stream in one record, then its empty end record.
    pub fn params(self, request_id: u16, pairs: &[(&str, &str)]) -> Self {
        let content = encode_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        self.stream(RecordType::Params, request_id, &content, usize::MAX)
    }

    /// A stream's content in records of at most `record_size` bytes, then
    /// the empty end record.
    pub fn stream(
        mut self,
        record_type: RecordType,
        request_id: u16,
        content: &[u8],
        record_size: usize,
    ) -> Self {
        let size = record_size.clamp(1, 0xffff);
        for piece in content.chunks(size) {
            self = self.record(record_type, request_id, piece);
        }
        self.record(record_type, request_id, b"")
    }

    /// The whole STDIN stream: `body` in records of up to 65535 bytes, then
    /// the empty end record.
    pub fn stdin(self, request_id: u16, body: &[u8]) -> Self {
        self.stream(RecordType::Stdin, request_id, body, 0xffff)
    }

    /// FCGI_ABORT_REQUEST.
    pub fn abort(self, request_id: u16) -> Self {
        self.record(RecordType::AbortRequest, request_id, b"")
    }

    /// FCGI_GET_VALUES asking for `names`.
    pub fn get_values(self, names: &[&str]) -> Self {
        let content = encode_pairs(names.iter().map(|n| (n.as_bytes(), &b""[..])));
        self.record(RecordType::GetValues, 0, &content)
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Name-value pairs in wire form.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        let pair = NameValue::new(name, value);
        let start = out.len();
        out.resize(start + pair.encoded_len(), 0);
        pair.encode(&mut out[start..])
            .expect("sized by encoded_len");
    }
    out
}

/// The params nginx 1.22 sends with Debian's stock `fastcgi_params` for
/// `GET /index.php?page=2&sort=desc` from a browser: 26 pairs, about 1 KiB.
pub fn nginx_params() -> Vec<(&'static str, &'static str)> {
    vec![
        ("QUERY_STRING", "page=2&sort=desc"),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SCRIPT_NAME", "/index.php"),
        ("REQUEST_URI", "/index.php?page=2&sort=desc"),
        ("DOCUMENT_URI", "/index.php"),
        ("DOCUMENT_ROOT", "/var/www/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "51324"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "localhost"),
        ("REDIRECT_STATUS", "200"),
        ("SCRIPT_FILENAME", "/var/www/html/index.php"),
        ("HTTP_HOST", "localhost:8080"),
        (
            "HTTP_USER_AGENT",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "HTTP_ACCEPT",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
        ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br"),
        (
            "HTTP_COOKIE",
            "session=8f2d1c6e0b7a4f3e9d5c2b1a0e9f8d7c; theme=dark; consent=1; _ga=GA1.1.123456789.1700000000",
        ),
        ("HTTP_CONNECTION", "keep-alive"),
    ]
}

/// One whole nginx-shaped request (keep-conn Responder, `nginx_params`,
/// `body` on stdin), as nginx frames it: params in one record.
pub fn nginx_request(request_id: u16, body: &[u8]) -> Vec<u8> {
    Wire::new()
        .begin(request_id, Role::Responder, true)
        .params(request_id, &nginx_params())
        .stdin(request_id, body)
        .into_bytes()
}

/// A test body of `size` bytes whose bytes depend on their position, so a
/// reordered, dropped or duplicated piece shows.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| {
            let bytes = i.to_le_bytes();
            bytes[0] ^ bytes[1].rotate_left(3) ^ bytes[2]
        })
        .collect()
}
