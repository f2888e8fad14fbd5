//! Every frame of `../shared/protocols/dlt698-vectors.md`, read from the file and checked by one
//! data-driven `check`: valid frames parse with the header the file prints, re-encode to the
//! same bytes, and carry the APDU (service and PIID) it names, which re-encodes too; negative
//! frames fail with the named reason. A vector added to the file is checked without a change
//! here; one this code cannot place fails.

use meterd_protocols::dlt698::{
    apdu::Apdu,
    frame::{self, FragmentKind, Reassembled, Reassembly},
    from_hex, Dlt698Error,
};

struct Vector {
    id: String,
    expect: String,
    hex: String,
    decoded: Vec<String>,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/protocols/dlt698-vectors.md"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (the shared folder sits beside the project)"));
    let mut out: Vec<Vector> = Vec::new();
    let mut in_decoded = false;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            out.push(Vector {
                id: h.split_whitespace().next().unwrap_or_default().to_string(),
                expect: String::new(),
                hex: String::new(),
                decoded: Vec::new(),
            });
            in_decoded = false;
            continue;
        }
        let Some(v) = out.last_mut() else { continue };
        if let Some(e) = line.strip_prefix("- expect: ") {
            v.expect = e.trim().to_string();
        } else if let Some(h) = line.strip_prefix("- hex: ") {
            v.hex = h.trim().trim_matches('`').to_string();
        } else if let Some(d) = line.strip_prefix("- decoded: ") {
            v.decoded.push(d.trim().to_string());
            in_decoded = true;
        } else if in_decoded && line.starts_with("  - ") {
            v.decoded
                .push(line.trim_start_matches([' ', '-']).trim().to_string());
        } else if line.starts_with("- ") {
            in_decoded = false;
        }
    }
    out
}

/// The value after `key` in a decoded line, up to a space, `;` or `(`.
fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split([' ', ';', '(', ',']).next().unwrap_or(rest))
}

fn check_valid(v: &Vector, bytes: &[u8]) {
    let id = &v.id;
    let (f, pre) = frame::parse(bytes).unwrap_or_else(|e| panic!("{id}: {e}"));
    let header = &v.decoded[0];
    assert_eq!(
        format!("{:02X}", f.control.0),
        after(header, "C=").unwrap(),
        "{id} C"
    );
    assert_eq!(
        f.address.to_string(),
        after(header, "SA ").unwrap(),
        "{id} SA"
    );
    let flags = header.split("SA ").nth(1).unwrap();
    assert!(
        flags.contains(&format!(
            "({}, logic {}, {} bytes)",
            f.address.kind.name(),
            f.address.logical,
            f.address.bytes.len()
        )),
        "{id}: {flags} vs {:?}",
        f.address
    );
    assert_eq!(
        format!("{:02X}", f.client),
        after(header, "CA=").unwrap(),
        "{id} CA"
    );
    assert_eq!(
        (bytes.len() - pre - 2).to_string(),
        after(header, "L=").unwrap(),
        "{id} L"
    );
    // Re-encoding gives back the same bytes, preamble and SC scrambling included.
    assert_eq!(f.encode(pre).unwrap(), bytes, "{id} re-encodes");

    let body = v.decoded.get(1).map(String::as_str).unwrap_or_default();
    if let Some(word) = f.fragment {
        let kind = after(body, "link fragment ").unwrap();
        assert_eq!(word.kind.name(), kind, "{id} fragment kind");
        assert_eq!(
            word.seq.to_string(),
            after(body, "seq ").unwrap(),
            "{id} seq"
        );
        return;
    }
    let apdu = Apdu::decode(&f.data).unwrap_or_else(|e| panic!("{id}: {e}"));
    let name = body.split([' ', '(']).next().unwrap();
    assert_eq!(apdu.name(), name, "{id} service");
    let piid = after(body, "PIID=").or_else(|| after(body, "PIID-ACD="));
    if let Some(p) = piid {
        assert_eq!(format!("{:02X}", apdu.piid().unwrap()), p, "{id} PIID");
    }
    assert_eq!(apdu.encode().unwrap(), f.data, "{id}: the APDU re-encodes");
}

fn check(v: &Vector) {
    let id = &v.id;
    let bytes = from_hex(&v.hex).unwrap_or_else(|e| panic!("{id}: {e}"));
    match v.expect.as_str() {
        "valid" => check_valid(v, &bytes),
        neg if neg.starts_with("negative-frame: ") => {
            let err = frame::parse(&bytes).expect_err(id);
            let ok = match &neg["negative-frame: ".len()..] {
                "bad HCS" => matches!(err, Dlt698Error::BadHcs { .. }),
                "bad FCS" | "payload corrupted" => matches!(err, Dlt698Error::BadFcs { .. }),
                "truncated" => matches!(err, Dlt698Error::Truncated { have: 22, need: 25 }),
                "bad end byte" => matches!(err, Dlt698Error::BadEnd { found: 0x17, .. }),
                other => panic!("{id}: no check for {other:?}"),
            };
            assert!(ok, "{id}: {neg}, got {err:?}");
        }
        neg if neg.starts_with("negative-apdu: ") => {
            let (f, _) = frame::parse(&bytes).unwrap_or_else(|e| panic!("{id}: {e}"));
            let err = Apdu::decode(&f.data).expect_err(id);
            let ok = match &neg["negative-apdu: ".len()..] {
                "trailing byte" => matches!(err, Dlt698Error::TrailingApdu { extra: 1, .. }),
                "unknown Data tag" => matches!(err, Dlt698Error::UnknownDataTag { tag: 7, .. }),
                other => panic!("{id}: no check for {other:?}"),
            };
            assert!(ok, "{id}: {neg}, got {err:?}");
        }
        other => panic!("{id}: unknown expectation {other:?}"),
    }
}

#[test]
fn every_vector_in_the_shared_file_decodes_as_it_says() {
    let all = vectors();
    assert!(all.len() >= 72, "only {} vectors read", all.len());
    for v in &all {
        assert!(
            !v.hex.is_empty() && !v.expect.is_empty(),
            "{}: no hex or expect",
            v.id
        );
        check(v);
    }
}

fn data_of(id: &str) -> (frame::Frame, Vec<u8>) {
    let v = vectors().into_iter().find(|v| v.id == id).unwrap();
    let bytes = from_hex(&v.hex).unwrap();
    (frame::parse(&bytes).unwrap().0, bytes)
}

#[test]
fn link_fragments_reassemble_into_the_apdu_they_carry() {
    for (parts, whole) in [
        (&["G53", "G54", "G55"][..], "G29"),
        (&["G58", "G60"][..], "G04"),
    ] {
        let mut r = Reassembly::default();
        let mut done = None;
        for id in parts {
            let (f, _) = data_of(id);
            match r.push(f.fragment.unwrap(), &f.data).unwrap() {
                Reassembled::Confirm(w) => assert_eq!(w.kind, FragmentKind::Confirm),
                Reassembled::Done(apdu) => done = Some(apdu),
            }
        }
        let apdu = done.unwrap_or_else(|| panic!("{parts:?} did not complete"));
        assert_eq!(apdu, data_of(whole).0.data, "{parts:?} = {whole}");
        Apdu::decode(&apdu).unwrap();
    }
}

#[test]
fn a_confirm_frame_answers_the_first_fragment() {
    // G59 confirms G58's fragment 0: DIR and PRM of a client answer, the word alone.
    let (g58, _) = data_of("G58");
    let mut r = Reassembly::default();
    let Reassembled::Confirm(word) = r.push(g58.fragment.unwrap(), &g58.data).unwrap() else {
        panic!("no confirm")
    };
    let (g59, bytes) = data_of("G59");
    assert_eq!(g59.fragment, Some(word));
    assert!(g59.data.is_empty());
    assert_eq!(g59.encode(0).unwrap(), bytes);
}

#[test]
fn a_scrambled_frame_carries_the_same_apdu_as_the_plain_one() {
    let (plain, _) = data_of("G01");
    let (sc, _) = data_of("G57");
    assert!(sc.control.scrambled() && !plain.control.scrambled());
    assert_eq!(sc.data, plain.data);
}
