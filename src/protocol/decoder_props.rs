//! Property tests of every decoder that reads peer bytes: arbitrary input never panics, and what
//! the proxy encodes decodes back to the same values. They run in the quick tier (`cargo test
//! --lib`), with proptest's shrinking to a minimal failing input.

use bytes::BytesMut;
use proptest::prelude::*;

use super::frame::{Frame, FrameReader};
use super::startup::{self, Initial};
use super::{message, results};

/// A tagged frame with a body of arbitrary bytes, as a peer could send it.
fn any_frame() -> impl Strategy<Value = Frame> {
    (
        prop::sample::select(b"QPBDEHSCXfdcpRKZTDnsICGA12t3Nv".to_vec()),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(tag, body)| Frame::build(tag, &body))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_frame_reader_never_panics_and_never_over_reads(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        max in 4usize..300,
    ) {
        let reader = FrameReader::new(max);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut taken = 0;
        while let Ok(Some(f)) = reader.next(&mut buf) {
            prop_assert!(f.raw.len() >= 5 && f.raw.len() <= max + 1);
            taken += f.raw.len();
        }
        prop_assert!(taken + buf.len() == bytes.len());
    }

    #[test]
    fn frames_split_anywhere_come_back_whole(
        frames in prop::collection::vec(any_frame(), 1..8),
        cut in 0usize..2048,
    ) {
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
        let cut = cut.min(wire.len());
        let reader = FrameReader::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut out = Vec::new();
        while let Some(f) = reader.next(&mut buf).expect("well-formed") {
            out.push(f);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(f) = reader.next(&mut buf).expect("well-formed") {
            out.push(f);
        }
        prop_assert_eq!(out.len(), frames.len());
        for (a, b) in out.iter().zip(&frames) {
            prop_assert_eq!(&a.raw, &b.raw);
        }
    }

    #[test]
    fn message_decoders_never_panic_on_any_body(f in any_frame()) {
        let _ = message::decode_query(&f);
        let _ = message::decode_parse(&f);
        let _ = message::parse_name(&f);
        let _ = message::decode_fields(&f);
        let _ = message::decode_auth(&f);
        let _ = message::decode_backend_key(&f);
        let _ = message::decode_parameter_status(&f);
        let _ = message::decode_sasl_mechanisms(f.body());
        let _ = message::decode_bind(&f);
        let _ = message::decode_target(&f);
        let _ = message::decode_execute(&f);
        let _ = results::error_code(&f.raw);
        let _ = results::row_fields(&f.raw);
        let _ = results::command_rows(&f.raw);
        let _ = results::data_row_values(&f.raw);
    }

    #[test]
    fn startup_decoding_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = startup::decode(&body);
        if body.len() >= 4 {
            let _ = startup::packet_len([body[0], body[1], body[2], body[3]]);
        }
    }

    #[test]
    fn cancel_requests_round_trip(pid in any::<i32>(), secret in prop::collection::vec(any::<u8>(), 4..=256)) {
        let p = startup::encode_cancel_request(pid, &secret);
        let len = startup::packet_len([p[0], p[1], p[2], p[3]]).expect("valid length");
        prop_assert_eq!(len, p.len());
        prop_assert_eq!(startup::decode(&p[4..]), Ok(Initial::Cancel { pid, secret }));
    }

    #[test]
    fn queries_round_trip(sql in "[^\u{0}]{0,200}") {
        let f = message::encode_query(&sql);
        prop_assert_eq!(message::decode_query(&f).ok(), Some(sql.as_str()));
    }

    #[test]
    fn parses_round_trip(
        name in prop::collection::vec(1u8..=255, 0..20),
        sql in "[^\u{0}]{0,200}",
        types in prop::collection::vec(any::<u32>(), 0..10),
    ) {
        let f = message::encode_parse(&name, &sql, &types);
        let p = message::decode_parse(&f).expect("decodes");
        prop_assert_eq!(message::parse_name(&f), Some(&name[..]));
        prop_assert_eq!(p.sql, sql.as_bytes());
        prop_assert_eq!(p.param_types, types);
    }
}

#[test]
fn the_ssl_request_is_recognised_and_nothing_else_is() {
    assert!(startup::is_ssl_request(&startup::encode_ssl_request()));
    let mut other = startup::encode_ssl_request();
    other[3] = 9;
    assert!(!startup::is_ssl_request(&other));
    assert_eq!(
        startup::decode(&startup::encode_ssl_request()[4..]),
        Ok(Initial::SslRequest)
    );
}
