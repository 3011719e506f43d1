//! Property tests for the frame parser: random streams, random cuts, random garbage.

use common::frame::{encode_frame, parse_frame, read_frame, Parse, HEADER_LEN, MAX_MSG};
use proptest::collection::vec;
use proptest::prelude::*;

/// Payloads biased towards the interesting sizes: empty, tiny, and the maximum.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        vec(any::<u8>(), 1..16),
        vec(any::<u8>(), MAX_MSG - 1..=MAX_MSG),
        vec(any::<u8>(), 0..=MAX_MSG),
    ]
}

proptest! {
    /// However the network cuts a stream of valid frames, an event loop that
    /// appends each piece and parses what it can recovers exactly the payloads.
    #[test]
    fn any_cutting_recovers_the_payloads(
        payloads in vec(payload(), 0..12),
        cuts in vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            encode_frame(p, &mut stream);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();

        let mut received = Vec::new();
        let mut seen = Vec::new();
        let mut start = 0;
        for end in cuts {
            received.extend_from_slice(&stream[start..end]);
            start = end;
            while let Parse::Frame { len } = parse_frame(&received) {
                seen.push(received[HEADER_LEN..len].to_vec());
                received.drain(..len);
            }
        }
        prop_assert_eq!(seen, payloads);
        prop_assert!(received.is_empty());
    }

    /// On arbitrary bytes the parser never panics and its answer is consistent
    /// with the header it saw.
    #[test]
    fn garbage_is_classified_consistently(bytes in vec(any::<u8>(), 0..64), header in any::<u32>()) {
        for buf in [bytes.clone(), [header.to_le_bytes().to_vec(), bytes].concat()] {
            match parse_frame(&buf) {
                Parse::Incomplete => {
                    if buf.len() >= HEADER_LEN {
                        let announced = u32::from_le_bytes(buf[..4].try_into().unwrap());
                        prop_assert!(announced as usize <= MAX_MSG);
                        prop_assert!(buf.len() < HEADER_LEN + announced as usize);
                    }
                }
                Parse::Frame { len } => {
                    prop_assert!(len <= buf.len());
                    prop_assert_eq!(len - HEADER_LEN, u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize);
                }
                Parse::TooLong { announced } => {
                    prop_assert!(announced as usize > MAX_MSG);
                    prop_assert_eq!(&announced.to_le_bytes()[..], &buf[..4]);
                }
            }
        }
    }

    /// The blocking reader agrees with the incremental parser on any input.
    #[test]
    fn blocking_reader_agrees_with_parser(header in any::<u32>(), body in vec(any::<u8>(), 0..64)) {
        let header = header % (MAX_MSG as u32 + 64);
        let wire = [header.to_le_bytes().to_vec(), body].concat();
        let mut payload = [0u8; MAX_MSG];
        let blocking = read_frame(&mut &wire[..], &mut payload);
        match parse_frame(&wire) {
            Parse::Frame { len } => prop_assert_eq!(blocking.unwrap(), Some(len - HEADER_LEN)),
            Parse::TooLong { .. } => prop_assert_eq!(blocking.unwrap_err().kind(), std::io::ErrorKind::InvalidData),
            Parse::Incomplete => prop_assert_eq!(blocking.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof),
        }
    }
}
