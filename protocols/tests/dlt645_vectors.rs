//! Every frame of `../shared/protocols/dlt645-vectors.md`, decoded through one `check` helper.
//! A completeness test reads that file, so a vector added there fails here until it is handled.

use meterd_protocols::dlt645::{
    describe::describe,
    frame::{self, from_hex},
    Dlt645Error,
    Version::{self, V1997, V2007},
};

type Expected = Result<&'static str, Dlt645Error>;

/// (id, version, frame as on the wire, expected one-line description or error)
const VECTORS: &[(&str, Version, &str, Expected)] = &[
    ("R1", V2007, "FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16", Ok("AAAAAAAAAAAA C=13 read address; L=0")),
    ("R2", V2007, "68 01 00 00 00 00 00 68 93 06 34 33 33 33 33 33 9D 16", Ok("000000000001 C=93 read address reply; L=6; address = 000000000001")),
    ("R3", V2007, "68 08 02 02 41 22 00 68 93 06 3B 35 35 74 55 33 79 16", Ok("002241020208 C=93 read address reply; L=6; address = 002241020208")),
    ("R5", V2007, "FE FE FE FE FE FE FE 68 12 90 78 56 34 12 68 93 06 45 C3 AB 89 67 45 07 16", Ok("123456789012 C=93 read address reply; L=6; address = 123456789012")),
    ("Q7", V2007, "68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16", Ok("AAAAAAAAAAAA C=11 read data; L=4; DI 00010000")),
    ("P7", V2007, "68 01 72 00 72 00 00 68 91 08 33 33 34 33 33 33 33 33 E7 16", Ok("000072007201 C=91 read data reply; L=8; DI 00010000; forward active energy, total = 0 kWh")),
    ("Q8", V2007, "68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16", Ok("123456789012 C=11 read data; L=4; DI 00010000")),
    ("P8", V2007, "68 12 90 78 56 34 12 68 91 08 33 33 34 33 AB 89 67 45 CC 16", Ok("123456789012 C=91 read data reply; L=8; DI 00010000; forward active energy, total = 123456.78 kWh")),
    ("P9", V2007, "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 54 16", Ok("123456789012 C=91 read data reply; L=8; DI 00010000; forward active energy, total = 1234.56 kWh")),
    ("X1", V2007, "68 12 90 78 56 34 12 68 91 08 33 33 34 33 89 67 45 33 55 16", Err(Dlt645Error::BadChecksum { expected: 0x54, got: 0x55 })),
    ("E1", V2007, "68 12 90 78 56 34 12 68 D1 01 35 8D 16", Ok("123456789012 C=D1 read data reply abnormal; L=1; error 02: no requested data")),
    ("F1", V2007, "68 12 90 78 56 34 12 68 12 05 34 33 63 36 34 D1 16", Ok("123456789012 C=12 read follow-up; L=5; DI 03300001; SEQ 1")),
    ("Q9", V2007, "FE FE FE FE 68 08 02 02 41 22 00 68 11 04 35 37 33 37 2A 16", Ok("002241020208 C=11 read data; L=4; DI 04000402")),
    ("P10", V2007, "68 08 02 02 41 22 00 68 91 0A 35 37 33 37 3B 35 35 74 55 33 51 16", Ok("002241020208 C=91 read data reply; L=10; DI 04000402; meter number = 002241020208")),
    ("P11", V2007, "FE FE FE FE 68 00 51 44 18 11 17 68 91 06 35 33 B3 35 36 83 45 16", Ok("171118445100 C=91 read data reply; L=6; DI 02800002; grid frequency = 50.03 Hz")),
    ("P12", V2007, "68 14 01 00 31 82 21 68 91 08 33 33 34 33 39 33 33 33 F1 16", Ok("218231000114 C=91 read data reply; L=8; DI 00010000; forward active energy, total = 0.06 kWh")),
    ("P13", V2007, "68 11 11 00 00 00 00 68 91 06 33 36 34 35 33 55 E3 16", Ok("000000001111 C=91 read data reply; L=6; DI 02010300; voltage, phase C = 220 V")),
    ("P14", V2007, "68 76 02 02 47 02 02 68 91 08 33 33 34 33 35 33 33 33 C9 16", Ok("020247020276 C=91 read data reply; L=8; DI 00010000; forward active energy, total = 0.02 kWh")),
    ("Q10", V2007, "FE FE FE FE 68 43 10 00 11 34 00 68 11 04 33 34 34 35 4D 16", Ok("003411001043 C=11 read data; L=4; DI 02010100")),
    ("P15", V2007, "FE FE FE FE 68 43 10 00 11 34 00 68 91 06 33 34 34 35 CA 55 EE 16", Ok("003411001043 C=91 read data reply; L=6; DI 02010100; voltage, phase A = 229.7 V")),
    ("X2", V2007, "FE FE FE FE 68 43 10 00 11 34 00 68 D1 06 33 34 34 35 CA 55 EE 16", Err(Dlt645Error::BadChecksum { expected: 0x2E, got: 0xEE })),
    ("E2", V2007, "FE FE FE FE 68 43 10 00 11 34 00 68 D1 01 31 6B 16", Ok("003411001043 C=D1 read data reply abnormal; L=1; error FE: no requested data, password error / unauthorized, baud rate cannot be changed, year time-zone count exceeded, daily time-slot count exceeded, tariff count exceeded, reserved bit set; note: error byte has the reserved bit 7 set: not a meaningful error code")),
    ("Q11", V2007, "68 01 00 14 57 42 30 68 11 04 33 33 33 33 8F 16", Ok("304257140001 C=11 read data; L=4; DI 00000000")),
    ("Q12", V2007, "68 18 35 00 10 02 10 68 11 04 33 34 34 35 24 16", Ok("100210003518 C=11 read data; L=4; DI 02010100")),
    ("Q13", V2007, "68 90 78 56 34 12 00 68 11 04 33 33 33 33 55 16", Ok("001234567890 C=11 read data; L=4; DI 00000000")),
    ("Q14", V2007, "68 78 56 34 12 00 00 68 11 04 33 34 34 35 C9 16", Ok("000012345678 C=11 read data; L=4; DI 02010100")),
    ("Q15", V2007, "FE FE FE FE 68 78 56 34 12 00 00 68 11 04 33 33 34 33 C6 16", Ok("000012345678 C=11 read data; L=4; DI 00010000")),
    ("Q16", V2007, "FE FE FE FE 68 02 00 31 08 22 20 68 11 04 32 55 B3 35 D1 16", Ok("202208310002 C=11 read data; L=4; DI 028022FF")),
    ("N1", V2007, "FE FE FE FE 68 99 99 99 99 99 99 68 13 00 79 16", Ok("999999999999 C=13 read address; L=0")),
    ("W1", V2007, "FE FE FE FE 68 12 34 56 78 10 12 68 15 06 45 67 89 AB 43 46 8A 16", Ok("121078563412 C=15 write address; L=6; address = 131078563412")),
    ("T1", V2007, "FE FE FE FE 68 99 99 99 99 99 99 68 08 06 58 44 35 45 67 89 7A 16", Ok("999999999999 C=08 broadcast time sync; L=6; note: not a valid ss mm hh DD MM YY time (read in natural YY MM DD hh mm ss order it would be 251102123456: a known implementation mistake)")),
    ("M1", V2007, "68 12 90 78 56 34 12 68 B1 10 33 32 34 33 9A 78 56 34 33 33 63 33 33 33 73 33 B7 16", Ok("123456789012 C=B1 read data reply more; L=16; DI 0001FF00; forward active energy, total = 12345.67 kWh; forward active energy, tariff 1 = 3000 kWh; forward active energy, tariff 2 = 4000 kWh")),
    ("M2", V2007, "68 12 90 78 56 34 12 68 12 05 33 32 34 33 34 9D 16", Ok("123456789012 C=12 read follow-up; L=5; DI 0001FF00; SEQ 1")),
    ("M3", V2007, "68 12 90 78 56 34 12 68 92 0D 33 32 34 33 33 33 83 33 9A 78 36 33 34 BC 16", Ok("123456789012 C=92 read follow-up reply; L=13; DI 0001FF00; continued value 0 = 5000 kWh; continued value 1 = 345.67 kWh; SEQ 1")),
    ("A1", V1997, "68 99 99 99 99 99 99 68 01 02 43 C3 6F 16", Ok("999999999999 C=01 read data; L=2; DI 9010")),
    ("A2", V1997, "68 95 32 06 00 00 00 68 81 06 43 C3 48 33 33 33 0B 16", Ok("000000063295 C=81 read data reply; L=6; DI 9010; forward active energy, total = 0.15 kWh")),
    ("A3", V1997, "68 95 32 06 00 00 00 68 81 06 43 C3 69 33 33 33 2C 16", Ok("000000063295 C=81 read data reply; L=6; DI 9010; forward active energy, total = 0.36 kWh")),
    ("A4", V1997, "68 95 32 06 00 00 00 68 C1 01 35 94 16", Ok("000000063295 C=C1 read data reply abnormal; L=1; error 02: data identifier error")),
    ("A5", V1997, "68 95 32 06 00 00 00 68 81 16 52 C3 6C 33 33 33 33 33 33 33 36 33 33 33 57 33 33 33 45 33 33 33 B7 16", Ok("000000063295 C=81 read data reply; L=22; DI 901F; forward active energy, total = 0.39 kWh; forward active energy, tariff 1 = 0 kWh; forward active energy, tariff 2 = 0.03 kWh; forward active energy, tariff 3 = 0.24 kWh; forward active energy, tariff 4 = 0.12 kWh")),
    ("A6", V1997, "FE FE FE FE 68 34 69 17 08 17 20 68 81 06 43 F3 39 39 3A 4C 78 16", Ok("201708176934 C=81 read data reply; L=6; DI C010; date and weekday = 2019-07-06 weekday 6")),
    ("A7", V1997, "FE FE FE FE 68 34 69 17 08 17 20 68 81 05 44 F3 37 55 55 61 16", Ok("201708176934 C=81 read data reply; L=5; DI C011; time = 22:22:04")),
    ("A8", V1997, "FE FE FE FE 68 34 69 17 08 17 20 68 81 08 65 F3 67 9C 4A 3B 4A 53 C9 16", Ok("201708176934 C=81 read data reply; L=8; DI C032; meter number = 201708176934")),
    ("A9", V1997, "68 99 99 99 99 99 99 68 04 0A 43 F3 33 33 33 33 39 39 3A 4C 6E 16", Ok("999999999999 C=04 write data; L=10; DI C010; note: request parameters 00 00 00 00 06 06 07 19")),
    ("A10", V1997, "FE FE FE FE 68 34 69 17 08 17 20 68 C4 01 34 BC 16", Ok("201708176934 C=C4 write data reply abnormal; L=1; error 01: illegal data")),
    ("A11", V1997, "FE FE FE FE 68 34 69 17 08 17 20 68 C4 01 37 BF 16", Ok("201708176934 C=C4 write data reply abnormal; L=1; error 04: password error")),
    ("A12", V1997, "68 99 99 99 99 99 99 68 01 02 44 E9 96 16", Ok("999999999999 C=01 read data; L=2; DI B611")),
    ("A13", V1997, "68 95 32 06 00 00 00 68 81 04 44 E9 33 33 B5 16", Ok("000000063295 C=81 read data reply; L=4; DI B611; voltage, phase A = 0 V")),
    ("A19", V1997, "68 11 11 00 00 00 00 68 81 04 46 E9 53 35 2E 16", Ok("000000001111 C=81 read data reply; L=4; DI B613; voltage, phase C = 220 V")),
    ("A20", V1997, "FE FE 68 42 36 00 00 86 09 68 01 02 43 C3 E0 16", Ok("098600003642 C=01 read data; L=2; DI 9010")),
    ("A21", V1997, "68 95 32 06 00 00 00 68 81 06 43 C4 33 33 33 33 F7 16", Ok("000000063295 C=81 read data reply; L=6; DI 9110; forward reactive energy, total = 0 kvarh")),
    ("A22", V1997, "68 67 45 23 01 00 00 68 11 02 44 E9 E0 16", Ok("000001234567 C=11 not a 1997 function (a 2007 control code); L=2; note: C=11 is a 2007 control code; a 1997 meter expects 01")),
    // The ss-first encoding of 2025-01-02 12:34:56 from the vectors' notes.
    ("T2", V2007, "68 99 99 99 99 99 99 68 08 06 89 67 45 35 34 58 6A 16", Ok("999999999999 C=08 broadcast time sync; L=6; time = 2025-01-02 12:34:56")),
];

fn check(id: &str, version: Version, hex: &str, expected: &Expected) {
    let bytes = from_hex(hex).unwrap_or_else(|e| panic!("{id}: {e}"));
    let got = describe(version, &bytes).map(|d| d.summary());
    assert_eq!(
        got.as_deref().map_err(Clone::clone),
        expected.clone(),
        "vector {id}"
    );
    if let Ok((f, pre)) = frame::parse(&bytes) {
        // Re-encoding gives back the same bytes (with the same preamble).
        assert_eq!(f.encode(pre).unwrap(), bytes, "vector {id} re-encodes");
    }
}

#[test]
fn every_public_vector_decodes_as_the_notes_say() {
    for (id, version, hex, expected) in VECTORS {
        check(id, *version, hex, expected);
    }
}

#[test]
fn every_vector_in_the_shared_file_is_checked_here() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/protocols/dlt645-vectors.md"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (the shared folder sits beside the project)"));
    let mut seen = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 4 || !cols[2].starts_with('`') {
            continue;
        }
        let (id, hex) = (cols[1], cols[2].trim_matches('`'));
        let ours = VECTORS
            .iter()
            .find(|v| v.0 == id)
            .unwrap_or_else(|| panic!("vector {id} has no expectation here"));
        assert_eq!(
            from_hex(ours.2).unwrap(),
            from_hex(hex).unwrap(),
            "vector {id} differs from the shared file"
        );
        seen += 1;
    }
    assert!(seen >= 50, "only {seen} vectors found in {path}");
}
