//! Any bytes through the DL/T 698.45 decoder: scanning a stream, parsing one frame, decoding
//! APDUs and Data, explaining frames. Nothing may panic, and whatever decodes re-encodes to
//! the same bytes. `cargo fuzz run dlt698_decode` (see the README).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meterd_protocols::dlt698::{apdu::Apdu, describe, frame, Data};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    for _ in 0..data.len() + 1 {
        match frame::scan(buf) {
            frame::Scan::Frame(f, n) => {
                let wire = f.encode(0).expect("a decoded frame encodes");
                assert_eq!(frame::parse(&wire).expect("and parses").0, f);
                buf = &buf[n.min(buf.len())..];
            }
            frame::Scan::Invalid { skip, .. } => buf = &buf[skip.min(buf.len())..],
            frame::Scan::Incomplete { skip } if skip < buf.len() => buf = &buf[skip + 1..],
            frame::Scan::Incomplete { .. } => break,
        }
    }
    let _ = describe::describe(data);
    if let Ok(a) = Apdu::decode(data) {
        assert_eq!(a.encode().expect("a decoded APDU encodes"), data);
        let _ = describe::describe_apdu(&a);
    }
    if let Ok(d) = Data::decode(data) {
        assert_eq!(d.encode().expect("decoded Data encodes"), data);
    }
});
