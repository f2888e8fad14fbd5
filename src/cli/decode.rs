//! `meterd decode`: every field of captured frames.

use super::*;

pub(super) fn decode(
    version: meterd::protocols::dlt645::Version,
    json: bool,
    frames: &[String],
) -> anyhow::Result<i32> {
    use meterd::protocols::dlt645::{describe::describe, frame::from_hex};
    let mut invalid = 0;
    for (i, text) in frames.iter().enumerate() {
        let result = from_hex(text).and_then(|bytes| describe(version, &bytes).map(|d| (bytes, d)));
        match (result, json) {
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
            (Ok((bytes, d)), false) => {
                outln!("frame {}: {} bytes", i + 1, bytes.len());
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
            (Err(e), false) => {
                invalid += 1;
                outln!("frame {}: invalid: {e}", i + 1);
            }
        }
    }
    Ok(if invalid > 0 { 1 } else { 0 })
}
