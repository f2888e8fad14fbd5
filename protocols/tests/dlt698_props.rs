//! Property tests of the DL/T 698.45 codec: frames and Data round-trip, a frame is found in
//! random junk, and no input, however hostile, panics or exhausts the stack.

use meterd_protocols::dlt698::{
    apdu::Apdu,
    axdr::MAX_DEPTH,
    data::{Data, DateTimeS, Oad},
    frame::{self, AddressKind, Control, FragmentKind, FragmentWord, Frame, Scan, ServerAddress},
    Dlt698Error,
};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Data> {
    prop_oneof![
        Just(Data::Null),
        any::<bool>().prop_map(Data::Bool),
        any::<i32>().prop_map(Data::DoubleLong),
        any::<u32>().prop_map(Data::DoubleLongUnsigned),
        any::<i8>().prop_map(Data::Integer),
        any::<i16>().prop_map(Data::Long),
        any::<u8>().prop_map(Data::Unsigned),
        any::<u16>().prop_map(Data::LongUnsigned),
        any::<i64>().prop_map(Data::Long64),
        any::<u64>().prop_map(Data::Long64Unsigned),
        any::<u8>().prop_map(Data::Enum),
        proptest::num::f32::NORMAL.prop_map(Data::Float32),
        proptest::num::f64::NORMAL.prop_map(Data::Float64),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Data::OctetString),
        proptest::collection::vec(0x20u8..0x7F, 0..40).prop_map(Data::VisibleString),
        (0usize..40)
            .prop_flat_map(|bits| (
                Just(bits),
                proptest::collection::vec(any::<u8>(), bits.div_ceil(8))
            ))
            .prop_map(|(bits, bytes)| Data::BitString { bits, bytes }),
        (2000u16..2100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60).prop_map(
            |(year, month, day, hour, minute, second)| Data::DateTimeS(DateTimeS {
                year,
                month,
                day,
                hour,
                minute,
                second
            })
        ),
        any::<u32>().prop_map(|v| Data::Oad(Oad::from_u32(v))),
        (any::<i8>(), any::<u8>()).prop_map(|(scaler, unit)| Data::ScalerUnit { scaler, unit }),
        any::<[u8; 5]>().prop_map(Data::Comdcb),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Data::Array),
            proptest::collection::vec(inner, 0..8).prop_map(Data::Structure),
        ]
    })
}

fn address() -> impl Strategy<Value = ServerAddress> {
    (
        prop_oneof![
            Just(AddressKind::Single),
            Just(AddressKind::Wildcard),
            Just(AddressKind::Group),
            Just(AddressKind::Broadcast)
        ],
        0u8..4,
        proptest::collection::vec(any::<u8>(), 1..=16),
    )
        .prop_map(|(kind, logical, bytes)| ServerAddress {
            kind,
            logical,
            bytes,
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        any::<u8>(),
        address(),
        any::<u8>(),
        proptest::option::of((0u16..4096, 0u8..4, 0u8..4)),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(c, address, client, fragment, data)| {
            // Reserved bit 4 clear, function 1 or 3; the fragment bit follows the word.
            let mut control = (c & 0xC8) | if c & 1 == 0 { 3 } else { 1 };
            let fragment = fragment.map(|(seq, kind, reserved)| {
                control |= 0x20;
                FragmentWord {
                    seq,
                    kind: [
                        FragmentKind::First,
                        FragmentKind::Last,
                        FragmentKind::Confirm,
                        FragmentKind::Middle,
                    ][usize::from(kind)],
                    reserved,
                }
            });
            Frame {
                control: Control(control),
                address,
                client,
                fragment,
                data,
            }
        })
}

proptest! {
    #[test]
    fn data_round_trips(d in data()) {
        let bytes = d.encode().unwrap();
        prop_assert_eq!(Data::decode(&bytes).unwrap(), d);
    }

    #[test]
    fn frames_round_trip(f in frame(), pre in 0usize..5) {
        let bytes = f.encode(pre).unwrap();
        let (back, p) = frame::parse(&bytes).unwrap();
        prop_assert_eq!(p, pre);
        prop_assert_eq!(back, f);
    }

    #[test]
    fn a_frame_is_found_in_random_junk(
        f in frame(),
        before in proptest::collection::vec(any::<u8>(), 0..64),
        after in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let wire = f.encode(2).unwrap();
        let mut buf = [before.clone(), wire, after].concat();
        let mut found = None;
        for _ in 0..buf.len() + 1 {
            match frame::scan(&buf) {
                Scan::Frame(got, n) => {
                    if got == f {
                        found = Some(got);
                        break;
                    }
                    buf.drain(..n);
                }
                Scan::Invalid { skip, .. } => {
                    buf.drain(..skip);
                }
                Scan::Incomplete { .. } => break,
            }
        }
        prop_assert_eq!(found, Some(f));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = frame::scan(&bytes);
        let _ = frame::parse(&bytes);
        let _ = Apdu::decode(&bytes);
        let _ = Data::decode(&bytes);
    }

    #[test]
    fn apdus_that_decode_re_encode_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Random input rarely decodes; when it does, the bytes come back exactly.
        if let Ok(a) = Apdu::decode(&bytes) {
            prop_assert_eq!(a.encode().unwrap(), bytes);
        }
    }
}

#[test]
fn nesting_past_the_limit_is_refused_not_followed() {
    // 100,000 nested one-element arrays: a recursive decoder without a limit would overflow
    // its stack.
    let mut bytes = [1u8, 1].repeat(100_000);
    bytes.push(0);
    assert!(matches!(
        Data::decode(&bytes),
        Err(Dlt698Error::TooDeep { limit, .. }) if limit == MAX_DEPTH
    ));
}

#[test]
fn a_forged_count_is_refused_before_anything_is_allocated() {
    for (bytes, what) in [
        (
            &[0x01, 0x82, 0xFF, 0xFF][..],
            "array of 65,535 with nothing after",
        ),
        (
            &[0x09, 0x82, 0x10, 0x00, 0x01],
            "octet-string of 4,096 with one byte",
        ),
    ] {
        assert!(
            matches!(Data::decode(bytes), Err(Dlt698Error::ShortApdu { .. })),
            "{what}"
        );
    }
}

#[test]
fn non_minimal_lengths_and_bad_dates_are_refused() {
    let cases: [(&[u8], &str); 4] = [
        (&[0x09, 0x81, 0x01, 0x00], "81 form for 1"),
        (&[0x09, 0x82, 0x00, 0x10], "82 form for 16"),
        (
            &[0x1C, 0x07, 0xE2, 0x11, 0x01, 0x00, 0x00, 0x00],
            "month 17",
        ),
        (&[0x03, 0x02], "bool 2"),
    ];
    for (bytes, what) in cases {
        assert!(Data::decode(bytes).is_err(), "{what}");
    }
    // Unspecified fields (FF) are fine.
    Data::decode(&[0x1C, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
}
