//! Any bytes through the DL/T 645 decoder: scanning a stream, parsing one frame, explaining it
//! in both versions. Nothing may panic. `cargo fuzz run dlt645_decode` (see the README).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meterd_protocols::dlt645::{describe, frame, Version};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    for _ in 0..data.len() + 1 {
        match frame::scan(buf) {
            frame::Scan::Frame(f, n) => {
                let _ = describe::explain(Version::V2007, &f, 0);
                let _ = describe::explain(Version::V1997, &f, 0);
                buf = &buf[n.min(buf.len())..];
            }
            frame::Scan::Invalid { skip, .. } => buf = &buf[skip.min(buf.len())..],
            frame::Scan::Incomplete { skip } if skip < buf.len() => buf = &buf[skip + 1..],
            frame::Scan::Incomplete { .. } => break,
        }
    }
    let _ = describe::describe(Version::V2007, data);
    let _ = describe::describe(Version::V1997, data);
});
