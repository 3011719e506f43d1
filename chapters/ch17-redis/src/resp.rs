// ANCHOR: module
//! RESP, the Redis serialization protocol, version 2: requests in, replies out.
//!
//! A request is an array of bulk strings, the *multibulk* form every client
//! library sends, `*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n`, or an *inline* command,
//! a line of words as a person types it into `telnet`, `GET key\r\n`. A reply
//! is one of five types, told apart by its first byte: `+` a simple string,
//! `-` an error, `:` an integer, `$` a bulk string (`$-1` is null), `*` an
//! array of replies.
//!
//! The parser takes whatever bytes have arrived. A request may stop anywhere,
//! so it says `Incomplete` and remembers how far it checked ([`Progress`]),
//! so that the next read resumes there: a client that sends a large request
//! a byte at a time must not make us parse it from the start on every byte.
//!
//! Where Redis is lenient we are too, so that both accept and refuse the
//! same inputs with the same words: it does not look at the two bytes after
//! a bulk string's data, nor at the byte after the `\r` of a length line.

use std::ops::Range;

use crate::buffer::MAX_CAPACITY;

// ANCHOR: limits
/// The largest request we take, its arguments and all: it must fit in a
/// connection's read buffer (chapter 8's, 256 KiB). Redis takes bulk strings
/// of up to 512 MB (`proto-max-bulk-len`) and keeps growing its buffer;
/// a request that declares more than we take gets Redis's own error for a
/// bulk length it refuses, at once, before any of it is read.
pub const MAX_REQUEST: usize = MAX_CAPACITY;

/// The longest inline command, as in Redis (`PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 << 10;

/// The longest length line, `$` or `*` and a number, `\r\n` included. Redis
/// waits for 64 KiB before it gives up on one; no valid number is this long.
const MAX_LENGTH_LINE: usize = 32;

/// The smallest bulk string on the wire, `$0\r\n\r\n`: how many arguments a
/// request of at most `MAX_REQUEST` bytes can hold.
const MIN_BULK: usize = 6;
// ANCHOR_END: limits

// ANCHOR: parse_types
/// What the bytes at the front of the read buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole request, `len` bytes long; its arguments are in [`Args`].
    Request { len: usize },
    /// `len` bytes that ask for nothing: an empty line, or `*0\r\n`. Redis
    /// skips them without a reply.
    Nothing { len: usize },
    /// Not a whole request yet.
    Incomplete,
    /// Not RESP: answer the error, then close the connection.
    Error(ProtocolError),
}

/// What went wrong, in Redis's words (`networking.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    InvalidMultibulkLength,
    InvalidBulkLength,
    /// The byte found where a bulk string's `$` should be.
    ExpectedDollar(u8),
    TooBigMultibulkCount,
    TooBigBulkCount,
    TooBigInline,
    UnbalancedQuotes,
}

/// How far the parser got through a request that has not fully arrived.
/// Stored with the connection between reads; the default is "from the start".
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Multibulk: how many arguments the header announced (0: header not
    /// read yet), how many of them are whole, and where the next one starts.
    /// Inline: `next` alone, how far we looked for the end of the line.
    count: usize,
    whole: usize,
    next: usize,
}

/// The arguments of the last request parsed, as ranges of its bytes; an
/// inline command's are copied out first, since quotes and escapes make
/// them differ from what was sent. Reused from one request to the next.
#[derive(Debug, Default)]
pub struct Args {
    ranges: Vec<Range<usize>>,
    /// An inline command's arguments, unescaped; empty for a multibulk one.
    inline: Vec<u8>,
    is_inline: bool,
}
// ANCHOR_END: parse_types

/// One request's arguments; `arg(0)` is the command's name.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    bytes: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl Args {
    /// The request [`parse`] found at the front of `input`.
    pub fn request<'a>(&'a self, input: &'a [u8]) -> Request<'a> {
        let bytes = if self.is_inline { &self.inline } else { input };
        Request {
            bytes,
            ranges: &self.ranges,
        }
    }
}

impl<'a> Request<'a> {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn arg(&self, i: usize) -> &'a [u8] {
        &self.bytes[self.ranges[i].clone()]
    }

    /// The arguments from `from` on.
    pub fn args(&self, from: usize) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        self.ranges[from..].iter().map(move |r| &bytes[r.clone()])
    }
}

// ANCHOR: parse
/// Parses the request at the front of `input`, resuming from `progress`.
/// On a whole request, its arguments are left in `args` and `progress` is
/// reset for the next one.
pub fn parse(input: &[u8], progress: &mut Progress, args: &mut Args) -> Parse {
    let parsed = match input.first() {
        None => return Parse::Incomplete,
        Some(b'*') => multibulk(input, progress, args),
        Some(_) => inline(input, progress, args),
    };
    if matches!(parsed, Parse::Request { .. } | Parse::Nothing { .. }) {
        *progress = Progress::default();
    }
    parsed
}

/// `*<count>\r\n` then `count` times `$<len>\r\n<len bytes>\r\n`.
fn multibulk(input: &[u8], progress: &mut Progress, args: &mut Args) -> Parse {
    let resumed = progress.count > 0;
    if !resumed {
        let (count, next) = match length_line(input, 0, b'*') {
            Line::Number(n, next) => (n, next),
            Line::Incomplete => return Parse::Incomplete,
            Line::TooLong => return Parse::Error(ProtocolError::TooBigMultibulkCount),
            Line::NotANumber | Line::NotABulk(_) => {
                return Parse::Error(ProtocolError::InvalidMultibulkLength)
            }
        };
        if count <= 0 {
            return Parse::Nothing { len: next };
        }
        // Redis refuses more than i32::MAX; we, what cannot fit.
        if count as u64 > (MAX_REQUEST.saturating_sub(next) / MIN_BULK) as u64 {
            return Parse::Error(ProtocolError::InvalidMultibulkLength);
        }
        *progress = Progress {
            count: count as usize,
            whole: 0,
            next,
        };
        args.ranges.clear();
        args.is_inline = false;
    }
    while progress.whole < progress.count {
        let start = progress.next;
        let (len, data) = match length_line(input, start, b'$') {
            Line::Number(n, data) => (n, data),
            Line::Incomplete => return incomplete(input),
            Line::TooLong => return Parse::Error(ProtocolError::TooBigBulkCount),
            Line::NotANumber => return Parse::Error(ProtocolError::InvalidBulkLength),
            Line::NotABulk(got) => return Parse::Error(ProtocolError::ExpectedDollar(got)),
        };
        // Its data and `\r\n` must fit in a request.
        if len < 0 || len as u64 + 2 > MAX_REQUEST.saturating_sub(data) as u64 {
            return Parse::Error(ProtocolError::InvalidBulkLength);
        }
        let end = data + len as usize;
        // The data and its `\r\n`, which, like Redis, we skip unread.
        if end + 2 > input.len() {
            return incomplete(input);
        }
        args.ranges.push(data..end);
        progress.whole += 1;
        progress.next = end + 2;
    }
    if resumed {
        // The ranges of the arguments checked during earlier reads are gone
        // (`args` served other connections meanwhile): parse it again, whole.
        *progress = Progress::default();
        return multibulk(input, progress, args);
    }
    Parse::Request { len: progress.next }
}

/// Waiting for more. A request that has filled `MAX_REQUEST` bytes without
/// ending cannot fit: only its last length line can have brought it there.
fn incomplete(input: &[u8]) -> Parse {
    if input.len() >= MAX_REQUEST {
        return Parse::Error(ProtocolError::InvalidBulkLength);
    }
    Parse::Incomplete
}

enum Line {
    /// The number, and where the next line starts.
    Number(i64, usize),
    Incomplete,
    TooLong,
    NotANumber,
    /// A line that does not start with the marker, but with this.
    NotABulk(u8),
}

/// Reads `*<n>\r` or `$<n>\r` at `start`: the number ends at the `\r`, and
/// the byte after it is skipped, as Redis does. Like Redis, it waits for
/// the whole line before it looks at the line's first byte.
fn length_line(input: &[u8], start: usize, marker: u8) -> Line {
    let window = &input[start.min(input.len())..input.len().min(start + MAX_LENGTH_LINE)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() == MAX_LENGTH_LINE {
            Line::TooLong
        } else {
            Line::Incomplete
        };
    };
    if start + cr + 2 > input.len() {
        return Line::Incomplete;
    }
    if window[0] != marker {
        return Line::NotABulk(window[0]);
    }
    match parse_integer(&window[1..cr]) {
        Some(n) => Line::Number(n, start + cr + 2),
        None => Line::NotANumber,
    }
}
// ANCHOR_END: parse

// ANCHOR: inline
/// A line of words separated by spaces, with `"..."` and `'...'` quoting,
/// ended by `\n` (a `\r` before it is dropped). Redis's `sdssplitargs`.
fn inline(input: &[u8], progress: &mut Progress, args: &mut Args) -> Parse {
    let from = progress.next;
    let Some(newline) = memchr(b'\n', &input[from..]).map(|i| from + i) else {
        if input.len() > MAX_INLINE {
            return Parse::Error(ProtocolError::TooBigInline);
        }
        progress.next = input.len();
        return Parse::Incomplete;
    };
    // Redis reads 16 KiB at a time and gives up on a line once 64 KiB have
    // come without its end; we may have read more at once, and decide alike.
    if newline > MAX_INLINE {
        return Parse::Error(ProtocolError::TooBigInline);
    }
    let mut line = &input[..newline];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    args.ranges.clear();
    args.inline.clear();
    args.is_inline = true;
    if split_args(line, args).is_err() {
        return Parse::Error(ProtocolError::UnbalancedQuotes);
    }
    let len = newline + 1;
    if args.ranges.is_empty() {
        return Parse::Nothing { len };
    }
    Parse::Request { len }
}

/// Splits `line` into words as Redis's `sdssplitargs` does, appending each
/// to `args.inline`. Redis reads the line as a C string: it ends at a zero byte.
fn split_args(line: &[u8], args: &mut Args) -> Result<(), ()> {
    let line = line.split(|&b| b == 0).next().unwrap_or_default();
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let out = &mut args.inline;
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = out.len();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(i);
            if in_double {
                if c == b'\\' && at(i + 1) == b'x' && hex(at(i + 2)).is_some() {
                    if let (Some(hi), Some(lo)) = (hex(at(i + 2)), hex(at(i + 3))) {
                        out.push(hi * 16 + lo);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && at(i + 1) != 0 {
                    out.push(match at(i + 1) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    // A closing quote must end the word.
                    if at(i + 1) != 0 && !is_space(at(i + 1)) {
                        return Err(());
                    }
                    i += 1;
                    break;
                }
                if c == 0 {
                    return Err(()); // no closing quote
                }
                out.push(c);
            } else if in_single {
                if c == b'\\' && at(i + 1) == b'\'' {
                    out.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if at(i + 1) != 0 && !is_space(at(i + 1)) {
                        return Err(());
                    }
                    i += 1;
                    break;
                }
                if c == 0 {
                    return Err(());
                }
                out.push(c);
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => out.push(c),
                }
            }
            i += 1;
        }
        args.ranges.push(start..out.len());
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
// ANCHOR_END: inline

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

// ANCHOR: integer
/// A decimal integer exactly as Redis reads one (`string2ll`): digits with
/// an optional `-`, no `+`, no spaces, no leading zeros, within `i64`.
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}
// ANCHOR_END: integer

// ANCHOR: replies
/// Writing replies: one method per RESP type, on the bytes to send.
pub trait Reply {
    fn simple(&mut self, text: &str);
    /// `-` and the text; `\r` and `\n` in it become spaces, as in Redis.
    fn error(&mut self, text: &[u8]);
    fn integer(&mut self, n: i64);
    fn bulk(&mut self, bytes: &[u8]);
    /// The null bulk string, `$-1`: a key that does not exist.
    fn null(&mut self);
    /// The header of an array of `len` replies, which follow it.
    fn array(&mut self, len: usize);
}

impl Reply for Vec<u8> {
    fn simple(&mut self, text: &str) {
        self.push(b'+');
        self.extend_from_slice(text.as_bytes());
        self.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, text: &[u8]) {
        self.push(b'-');
        let start = self.len();
        self.extend_from_slice(text);
        for b in &mut self[start..] {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
        self.extend_from_slice(b"\r\n");
    }

    fn integer(&mut self, n: i64) {
        self.push(b':');
        push_decimal(self, n);
        self.extend_from_slice(b"\r\n");
    }

    fn bulk(&mut self, bytes: &[u8]) {
        self.push(b'$');
        push_decimal(self, bytes.len() as i64);
        self.extend_from_slice(b"\r\n");
        self.extend_from_slice(bytes);
        self.extend_from_slice(b"\r\n");
    }

    fn null(&mut self) {
        self.extend_from_slice(b"$-1\r\n");
    }

    fn array(&mut self, len: usize) {
        self.push(b'*');
        push_decimal(self, len as i64);
        self.extend_from_slice(b"\r\n");
    }
}

/// The longest reply header: a type byte, 20 characters of `i64`, `\r\n`.
pub const HEADER_BOUND: usize = 23;

/// `n` in decimal, without the detour through `fmt`.
pub fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}
// ANCHOR_END: replies

impl ProtocolError {
    /// The error reply, `-ERR Protocol error: ...`.
    pub fn reply(self, out: &mut Vec<u8>) {
        let mut text = b"ERR Protocol error: ".to_vec();
        match self {
            ProtocolError::InvalidMultibulkLength => {
                text.extend_from_slice(b"invalid multibulk length")
            }
            ProtocolError::InvalidBulkLength => text.extend_from_slice(b"invalid bulk length"),
            ProtocolError::ExpectedDollar(got) => {
                text.extend_from_slice(b"expected '$', got '");
                text.extend_from_slice(&[got, b'\'']);
            }
            ProtocolError::TooBigMultibulkCount => {
                text.extend_from_slice(b"too big mbulk count string")
            }
            ProtocolError::TooBigBulkCount => text.extend_from_slice(b"too big bulk count string"),
            ProtocolError::TooBigInline => text.extend_from_slice(b"too big inline request"),
            ProtocolError::UnbalancedQuotes => {
                text.extend_from_slice(b"unbalanced quotes in request")
            }
        }
        out.error(&text);
    }
}
// ANCHOR_END: module

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` from the start, as one read would.
    fn parse_all(input: &[u8]) -> (Parse, Vec<Vec<u8>>) {
        let mut args = Args::default();
        let parsed = parse(input, &mut Progress::default(), &mut args);
        let words = match parsed {
            Parse::Request { .. } => args.request(input).args(0).map(<[u8]>::to_vec).collect(),
            _ => Vec::new(),
        };
        (parsed, words)
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_multibulk_request_and_its_length() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n";
        let (parsed, args) = parse_all(input);
        assert_eq!(parsed, Parse::Request { len: 22 });
        assert_eq!(args, words(&["GET", "key"]));
    }

    #[test]
    fn inline_commands_split_like_redis() {
        let cases: [(&[u8], &[&str]); 6] = [
            (b"PING\r\n", &["PING"]),
            (b"set  a\tb\n", &["set", "a", "b"]),
            (b"SET \"a b\" \"c\\x41\\n\"\r\n", &["SET", "a b", "cA\n"]),
            (b"SET 'it\\'s' x\r\n", &["SET", "it's", "x"]),
            (b"ECHO \"\"\r\n", &["ECHO", ""]),
            (b"ECHO a\0b c\r\n", &["ECHO", "a"]),
        ];
        for (input, expected) in cases {
            let (parsed, args) = parse_all(input);
            assert_eq!(parsed, Parse::Request { len: input.len() }, "{input:?}");
            assert_eq!(args, words(expected), "{input:?}");
        }
    }

    #[test]
    fn requests_that_ask_for_nothing_are_skipped() {
        for input in [&b"\r\n"[..], b"   \n", b"*0\r\n", b"*-1\r\n"] {
            assert_eq!(parse_all(input).0, Parse::Nothing { len: input.len() });
        }
    }

    #[test]
    fn every_protocol_error_in_redis_words() {
        use ProtocolError::*;
        let long = [b'1'; 40];
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (b"*x\r\n".to_vec(), InvalidMultibulkLength),
            (b"*01\r\n".to_vec(), InvalidMultibulkLength),
            (b"*+1\r\n".to_vec(), InvalidMultibulkLength),
            (b"*3000000000\r\n".to_vec(), InvalidMultibulkLength),
            (b"*2\r\nxyz\r\n".to_vec(), ExpectedDollar(b'x')),
            (b"*1\r\n$-5\r\n".to_vec(), InvalidBulkLength),
            (b"*1\r\n$04\r\nPING\r\n".to_vec(), InvalidBulkLength),
            (b"*1\r\n$600000000\r\n".to_vec(), InvalidBulkLength),
            ([b"*".as_slice(), &long].concat(), TooBigMultibulkCount),
            ([b"*1\r\n$".as_slice(), &long].concat(), TooBigBulkCount),
            (vec![b'x'; MAX_INLINE + 1], TooBigInline),
            (b"SET \"a b\r\n".to_vec(), UnbalancedQuotes),
            (b"SET 'it''s' x\r\n".to_vec(), UnbalancedQuotes),
        ];
        for (input, error) in cases {
            assert_eq!(parse_all(&input).0, Parse::Error(error), "{input:?}");
        }
    }

    #[test]
    fn like_redis_the_bytes_after_a_bulk_are_not_checked() {
        let (parsed, args) = parse_all(b"*1\r\n$4\r\nPINGxx");
        assert_eq!(parsed, Parse::Request { len: 14 });
        assert_eq!(args, words(&["PING"]));
    }

    #[test]
    fn error_replies_in_redis_words() {
        let mut out = Vec::new();
        ProtocolError::ExpectedDollar(b'f').reply(&mut out);
        out.error(b"ERR a\r\nb");
        assert_eq!(
            out,
            b"-ERR Protocol error: expected '$', got 'f'\r\n-ERR a  b\r\n"
        );
    }

    // ANCHOR: split_tests
    /// What a connection makes of a stream that arrives in `chunks`: parse
    /// after every read, as the server does, carrying `Progress` between
    /// reads; consume every whole request. The requests' arguments, in
    /// order, and the protocol error that ended the stream, if one did.
    fn connection(chunks: &[&[u8]]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
        let (mut buffer, mut progress, mut args) =
            (Vec::new(), Progress::default(), Args::default());
        let mut requests = Vec::new();
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            // Between two reads, the server parses other connections' requests.
            parse(
                b"*1\r\n$5\r\nOTHER\r\n",
                &mut Progress::default(),
                &mut args,
            );
            loop {
                match parse(&buffer, &mut progress, &mut args) {
                    Parse::Incomplete => break,
                    Parse::Nothing { len } => drop(buffer.drain(..len)),
                    Parse::Request { len } => {
                        let request = args.request(&buffer);
                        requests.push(request.args(0).map(<[u8]>::to_vec).collect());
                        buffer.drain(..len);
                    }
                    Parse::Error(error) => return (requests, Some(error)),
                }
            }
        }
        (requests, None)
    }

    fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Requests of every kind, in one stream: multibulk with awkward bytes
    /// in the arguments, an empty argument, inline with quotes, blank lines.
    fn sample_stream() -> (Vec<u8>, Vec<Vec<Vec<u8>>>) {
        let set = words(&["SET", "key\r\n*1\r\n$", "", "x"]);
        let ping = words(&["PING"]);
        let stream = [
            multibulk(&set),
            b"*0\r\n\r\nECHO \"a b\" 'c'\r\n".to_vec(),
            multibulk(&ping),
        ]
        .concat();
        (stream, vec![set, words(&["ECHO", "a b", "c"]), ping])
    }

    // ANCHOR: every_split
    #[test]
    fn a_stream_split_at_any_point_gives_the_same_requests() {
        let (stream, expected) = sample_stream();
        for split in 0..=stream.len() {
            let (requests, error) = connection(&[&stream[..split], &stream[split..]]);
            assert_eq!((&requests, error), (&expected, None), "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(connection(&bytes), (expected, None), "a byte at a time");
    }
    // ANCHOR_END: every_split

    /// A tiny generator, so the properties below need no crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        /// Bytes that mean something to RESP, more often than chance would.
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            const ALPHABET: &[u8] = b"*$\r\n 0123-9\"'\\xaZ\0";
            let len = self.below(max + 1);
            (0..len)
                .map(|_| match self.below(4) {
                    0 => self.below(256) as u8,
                    _ => ALPHABET[self.below(ALPHABET.len())],
                })
                .collect()
        }

        /// `stream` cut into pieces of random sizes.
        fn chunks<'a>(&mut self, stream: &'a [u8]) -> Vec<&'a [u8]> {
            let mut chunks = Vec::new();
            let mut rest = stream;
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(1 + self.below(rest.len().min(16)));
                chunks.push(chunk);
                rest = tail;
            }
            chunks
        }
    }

    /// Property: random requests, in random pieces, come out whole and in order.
    #[test]
    fn random_requests_in_random_pieces_come_out_whole() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..500 {
            let expected: Vec<Vec<Vec<u8>>> = (0..1 + rng.below(5))
                .map(|_| (0..1 + rng.below(4)).map(|_| rng.bytes(20)).collect())
                .collect();
            let stream: Vec<u8> = expected.iter().flat_map(|r| multibulk(r)).collect();
            let chunks = rng.chunks(&stream);
            assert_eq!(connection(&chunks), (expected, None), "{stream:?}");
        }
    }

    /// Property: on any bytes at all, garbage included, how they are cut
    /// into reads changes nothing: the same requests, the same error. Each
    /// read resumes where the last one stopped, and must agree with a parse
    /// of everything at once.
    #[test]
    fn any_bytes_parse_the_same_however_they_arrive() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..3000 {
            let mut stream = rng.bytes(60);
            if rng.below(2) == 0 {
                stream.splice(0..0, multibulk(&[rng.bytes(8), rng.bytes(8)]));
            }
            let whole = connection(&[&stream]);
            let chunks = rng.chunks(&stream);
            assert_eq!(connection(&chunks), whole, "{stream:?} in {chunks:?}");
        }
    }
    /// A request of 20,000 arguments sent a byte at a time: each read
    /// resumes after the arguments already whole. Parsed from the start on
    /// every byte, this would take some 10^9 steps (half a minute); it takes
    /// milliseconds.
    #[test]
    fn a_large_request_in_tiny_pieces_is_parsed_once() {
        let request = multibulk(&vec![b"a".to_vec(); 20_000]);
        let (mut progress, mut args) = (Progress::default(), Args::default());
        let start = std::time::Instant::now();
        for end in 1..request.len() {
            assert_eq!(
                parse(&request[..end], &mut progress, &mut args),
                Parse::Incomplete
            );
        }
        let parsed = parse(&request, &mut progress, &mut args);
        assert_eq!(parsed, Parse::Request { len: request.len() });
        assert_eq!(args.request(&request).len(), 20_000);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }
    // ANCHOR_END: split_tests

    #[test]
    fn integers_as_redis_reads_them() {
        for (text, value) in [
            ("0", Some(0)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("007", None),
            ("+5", None),
            (" 5", None),
            ("5 ", None),
            ("", None),
            ("-", None),
        ] {
            assert_eq!(parse_integer(text.as_bytes()), value, "{text:?}");
        }
        let mut out = Vec::new();
        for n in [0, 42, -42, i64::MIN, i64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
