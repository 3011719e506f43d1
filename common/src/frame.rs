//! The wire format: a frame is a 4-byte little-endian length, then that many
//! payload bytes. The echo reply to a frame is the identical frame.
//!
//! Two ways to read frames live here: [`read_frame`] / [`write_frame`] on any
//! `Read`/`Write` (a blocking socket), and the incremental [`parse_frame`]
//! for event loops, which only ever see "the bytes that have arrived so far".
//! The codec knows nothing of sockets or signals: a blocking server that must
//! notice Ctrl-C wraps its stream in [`crate::signals::Stoppable`].

use std::io::{self, ErrorKind, Read, Write};

// ANCHOR: limits
/// Largest payload a frame may carry. A longer announced length closes the connection.
pub const MAX_MSG: usize = 4096;
/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Largest whole frame: header plus the largest payload.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_MSG;
// ANCHOR_END: limits

// ANCHOR: parse
/// What the bytes received so far hold at their start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// Not yet a whole frame: read more bytes and ask again.
    Incomplete,
    /// A whole frame of `len` bytes (header included) starts the buffer;
    /// its payload is `buf[HEADER_LEN..len]`.
    Frame { len: usize },
    /// The header announces a payload longer than [`MAX_MSG`]: a protocol error.
    TooLong { announced: u32 },
}

/// Looks at the start of `buf` for one frame. Never reads past it, never copies.
pub fn parse_frame(buf: &[u8]) -> Parse {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Parse::Incomplete;
    };
    let announced = u32::from_le_bytes(*header);
    // Compare as u32 before converting: on any platform, 0xFFFFFFFF must be "too long".
    if announced > MAX_MSG as u32 {
        return Parse::TooLong { announced };
    }
    let len = HEADER_LEN + announced as usize;
    if buf.len() < len {
        Parse::Incomplete
    } else {
        Parse::Frame { len }
    }
}
// ANCHOR_END: parse

/// Appends the frame carrying `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_MSG, "payload over MAX_MSG");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

// ANCHOR: read_frame
/// Reads one frame's payload into `payload` and returns its length, or `None`
/// if the peer closed the connection cleanly between frames.
///
/// A frame longer than [`MAX_MSG`] is an `InvalidData` error; EOF inside a
/// frame is `UnexpectedEof`.
pub fn read_frame(r: &mut impl Read, payload: &mut [u8; MAX_MSG]) -> io::Result<Option<usize>> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(None),
        HEADER_LEN => {}
        _ => return Err(ErrorKind::UnexpectedEof.into()),
    }
    let len = u32::from_le_bytes(header);
    if len > MAX_MSG as u32 {
        let msg = format!("frame length {len} exceeds the maximum of {MAX_MSG}");
        return Err(io::Error::new(ErrorKind::InvalidData, msg));
    }
    let len = len as usize;
    if read_full(r, &mut payload[..len])? < len {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(len))
}

/// Fills `buf` unless EOF comes first; returns how many bytes were read.
///
/// `read` may return fewer bytes than asked (a *short read*): TCP is a byte
/// stream, and a frame can arrive in any number of pieces.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
// ANCHOR_END: read_frame

// ANCHOR: write_frame
/// Writes the frame carrying `payload`, header and payload in one buffer so a
/// small frame costs one `write` system call (and one TCP segment).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_frame(payload, &mut frame);
    // write_all loops over *short writes*: a write may take only part of the
    // buffer (the socket's send buffer was nearly full).
    w.write_all(&frame)
}
// ANCHOR_END: write_frame

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    fn header(len: u32) -> [u8; 4] {
        len.to_le_bytes()
    }

    #[test]
    fn boundary_lengths() {
        assert_eq!(parse_frame(&frame(b"")), Parse::Frame { len: 4 });
        let max = frame(&[7; MAX_MSG]);
        assert_eq!(parse_frame(&max), Parse::Frame { len: MAX_FRAME });
        assert_eq!(parse_frame(&max[..MAX_FRAME - 1]), Parse::Incomplete);
        assert_eq!(
            parse_frame(&header(4097)),
            Parse::TooLong { announced: 4097 }
        );
        assert_eq!(
            parse_frame(&header(u32::MAX)),
            Parse::TooLong {
                announced: u32::MAX
            }
        );
        assert_eq!(parse_frame(&header(4097)[..3]), Parse::Incomplete);
    }

    #[test]
    fn only_the_first_frame_is_reported() {
        let mut two = frame(b"ab");
        two.extend(frame(b"cde"));
        assert_eq!(parse_frame(&two), Parse::Frame { len: 6 });
        assert_eq!(parse_frame(&two[6..]), Parse::Frame { len: 7 });
    }

    /// Feeds a stream of frames to the parser the way an event loop would,
    /// with the stream cut into two reads at every possible point, and checks
    /// that exactly the original payloads come out.
    #[test]
    fn every_split_point_yields_the_same_frames() {
        let payloads: Vec<Vec<u8>> = vec![
            b"hello".to_vec(),
            vec![],
            vec![0xAB; MAX_MSG],
            b"x".to_vec(),
            (0..=255).collect(),
        ];
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        for split in 0..=stream.len() {
            let mut received = Vec::new();
            let mut seen = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                received.extend_from_slice(chunk);
                while let Parse::Frame { len } = parse_frame(&received) {
                    seen.push(received[HEADER_LEN..len].to_vec());
                    received.drain(..len);
                }
                assert!(!matches!(parse_frame(&received), Parse::TooLong { .. }));
            }
            assert_eq!(seen, payloads, "split at {split}");
            assert!(received.is_empty(), "split at {split}");
        }
    }

    #[test]
    fn blocking_round_trip() {
        let mut wire = Vec::new();
        for p in [&b"one"[..], b"", &[9; MAX_MSG]] {
            write_frame(&mut wire, p).unwrap();
        }
        let mut r = &wire[..];
        let mut buf = [0u8; MAX_MSG];
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), Some(0));
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), Some(MAX_MSG));
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn blocking_read_rejects_bad_frames() {
        let mut buf = [0u8; MAX_MSG];
        let too_long = header(4097);
        let err = read_frame(&mut &too_long[..], &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        let huge = header(u32::MAX);
        let err = read_frame(&mut &huge[..], &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        let truncated = &frame(b"hello")[..6];
        let err = read_frame(&mut &truncated[..], &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        let half_header = &header(1)[..2];
        let err = read_frame(&mut &half_header[..], &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    }

    /// A reader that hands out one byte per call: the worst short reads.
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn blocking_read_survives_short_reads() {
        let wire = frame(b"one byte at a time");
        let mut buf = [0u8; MAX_MSG];
        let n = read_frame(&mut OneByte(&wire), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"one byte at a time");
    }
}
