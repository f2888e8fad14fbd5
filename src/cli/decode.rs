//! `meterd decode`: every field of captured frames.

use super::*;

/// Every frame through `describe`: a JSON object per frame (`--json`), or `print`'s text;
/// exit 1 if any frame is invalid. Shared by both protocols.
fn decode_each<D: serde::Serialize, E: std::fmt::Display + std::fmt::Debug>(
    json: bool,
    frames: &[String],
    describe: impl Fn(&str) -> Result<(Vec<u8>, D), E>,
    print: impl Fn(usize, &[u8], &D),
) -> i32 {
    let mut invalid = 0;
    for (i, text) in frames.iter().enumerate() {
        match (describe(text), json) {
            (Ok((_, d)), true) => outln!(
                "{}",
                serde_json::json!({"frame": i + 1, "valid": true, "decoded": d})
            ),
            (Err(e), true) => {
                invalid += 1;
                outln!(
                    "{}",
                    serde_json::json!({"frame": i + 1, "valid": false, "error": e.to_string(), "detail": format!("{e:?}")})
                );
            }
            (Ok((bytes, d)), false) => print(i + 1, &bytes, &d),
            (Err(e), false) => {
                invalid += 1;
                outln!("frame {}: invalid: {e}", i + 1);
            }
        }
    }
    if invalid > 0 {
        1
    } else {
        0
    }
}

pub(super) fn decode(
    version: meterd::protocols::dlt645::Version,
    json: bool,
    frames: &[String],
) -> anyhow::Result<i32> {
    use meterd::protocols::dlt645::{describe::describe, frame::from_hex};
    Ok(decode_each(
        json,
        frames,
        |text| from_hex(text).and_then(|bytes| describe(version, &bytes).map(|d| (bytes, d))),
        print_645,
    ))
}

fn print_645(n: usize, bytes: &[u8], d: &meterd::protocols::dlt645::describe::Described) {
    outln!("frame {}: {} bytes", n, bytes.len());
    if d.preamble > 0 {
        outln!("  preamble   {} x FE", d.preamble);
    }
    outln!("  address    {}", d.address);
    outln!(
        "  control    {:02X}: {}, {}{}, function {:02X} {}",
        d.control,
        if d.reply {
            "meter -> master"
        } else {
            "master -> meter"
        },
        if d.abnormal { "abnormal" } else { "normal" },
        if d.follow_up {
            ", more frames follow"
        } else {
            ""
        },
        d.control & 0x1F,
        d.function
    );
    outln!("  length     {}", d.length);
    if d.length > 0 {
        outln!("  data       {}   (after -0x33)", d.data);
    }
    if let Some(di) = &d.di {
        outln!("  DI         {di}");
    }
    for (name, value, unit) in &d.values {
        outln!("  value      {name} = {value} {unit}");
    }
    if let Some(seq) = d.seq {
        outln!("  SEQ        {seq}");
    }
    if let Some((err, bits)) = &d.error {
        outln!("  error      {err:02X}: {}", bits.join(", "));
    }
    for n in &d.notes {
        outln!("  note       {n}");
    }
    outln!("  checksum   ok, end 16");
}

/// `decode --protocol dlt698`: one block (or JSON object) per frame.
pub(super) fn decode_698(json: bool, frames: &[String]) -> anyhow::Result<i32> {
    use meterd::protocols::dlt698::{describe::describe, from_hex};
    Ok(decode_each(
        json,
        frames,
        |text| from_hex(text).and_then(|bytes| describe(&bytes).map(|d| (bytes, d))),
        |n, bytes, d| print_698(n, bytes.len(), d),
    ))
}

fn print_698(n: usize, len: usize, d: &meterd::protocols::dlt698::describe::Description) {
    use meterd::protocols::dlt698::describe::show;
    outln!("frame {n}: {len} bytes");
    if d.preamble > 0 {
        outln!("  preamble   {} x FE", d.preamble);
    }
    outln!(
        "  address    {} ({}, logical {}), client {:02X}",
        d.address,
        d.address_type,
        d.logical_address,
        d.client_address
    );
    outln!(
        "  control    {}: {}, {}{}",
        d.control,
        d.direction,
        d.function,
        if d.scrambled { ", SC (+33H)" } else { "" }
    );
    outln!("  length     {}", d.length);
    if let Some(fr) = &d.fragment {
        outln!(
            "  fragment   {} seq {}{}: {}",
            fr.kind,
            fr.seq,
            if fr.reserved_bits != 0 {
                format!(" (reserved bits {})", fr.reserved_bits)
            } else {
                String::new()
            },
            fr.data
        );
    }
    let mut apdu = d.apdu.as_ref();
    let mut indent = String::from("  ");
    while let Some(a) = apdu {
        match a.piid {
            Some(p) => outln!(
                "{indent}service    {} PIID {p:02X} (service {}{}{})",
                a.service,
                p & 0x3F,
                if p & 0x80 != 0 { ", high priority" } else { "" },
                if p & 0x40 != 0 {
                    ", bit 6 (ACD in replies)"
                } else {
                    ""
                }
            ),
            None => outln!("{indent}service    {}", a.service),
        }
        for (k, v) in &a.fields {
            outln!("{indent}  {k} = {}", show(v));
        }
        for it in &a.items {
            let mut line = String::new();
            if let Some(s) = &it.server {
                line += &format!("meter {s}: ");
            }
            line += it.oad.as_deref().or(it.omd.as_deref()).unwrap_or("");
            if let Some(name) = it.name {
                line += &format!(" {name}");
            }
            if let Some(sel) = &it.selector {
                line += &format!(" [{sel}]");
            }
            if !it.columns.is_empty() {
                line += &format!(" columns {}", it.columns.join(", "));
            }
            if let Some(v) = &it.value {
                line += &format!(" = {}", show(v));
                if let Some(u) = it.unit.filter(|u| !u.is_empty()) {
                    line += &format!(" {u}");
                }
            }
            if let Some(dar) = &it.dar {
                line += &format!(" -> {dar}");
            }
            outln!("{indent}  {line}");
            for (q, v) in &it.quantities {
                outln!("{indent}    {q} = {v}");
            }
            if let Some(rows) = &it.rows {
                outln!("{indent}    {} row(s)", rows.len());
                for row in rows {
                    outln!(
                        "{indent}    {}",
                        row.iter().map(show).collect::<Vec<_>>().join(" | ")
                    );
                }
            }
            if let Some(back) = &it.read_back {
                outln!(
                    "{indent}    then {}{}{}",
                    back.oad.as_deref().unwrap_or(""),
                    back.value
                        .as_ref()
                        .map(|v| format!(" = {}", show(v)))
                        .unwrap_or_default(),
                    back.dar
                        .as_ref()
                        .map(|d| format!(" -> {d}"))
                        .unwrap_or_default()
                );
            }
        }
        apdu = a.inner.as_deref();
        if apdu.is_some() {
            outln!("{indent}wrapped APDU:");
            indent += "  ";
        }
    }
    outln!("  checksums  HCS {} FCS {} ok, end 16", d.hcs, d.fcs);
}
