//! `meterd profiles`: list the profiles, or print one with its read requests.

use super::*;

/// The built-in profiles, plus the user's in `dir`; a problem with a user file is printed
/// (naming the file) and that file skipped.
pub(super) fn profile_set(dir: Option<&Path>) -> ProfileSet {
    match dir {
        Some(d) => {
            let (set, problems) = ProfileSet::with_dir(d);
            for p in problems {
                eprintln!("{p}");
            }
            set
        }
        None => ProfileSet::builtin(),
    }
}

pub(super) fn profiles(name: Option<&str>, dir: Option<&Path>) -> anyhow::Result<i32> {
    let set = profile_set(dir);
    match name {
        None => {
            let rows: Vec<[String; 5]> = set
                .profiles
                .values()
                .map(|p| {
                    [
                        p.name.clone(),
                        p.manufacturer.clone(),
                        p.model.clone(),
                        p.quantities().count().to_string(),
                        p.origin.to_string(),
                    ]
                })
                .collect();
            let header =
                ["name", "manufacturer", "model", "quantities", "origin"].map(String::from);
            for line in table(&header, &rows) {
                outln!("{line}");
            }
        }
        Some(n) => {
            let p = set
                .get(n)
                .ok_or_else(|| anyhow!("no profile {n:?}; `meterd profiles` lists them"))?;
            outln!("# {} {} — {}", p.manufacturer, p.model, p.document);
            outln!("# origin: {}", p.origin);
            for g in &p.groups {
                outln!(
                    "\n[{}] every {}",
                    g.name,
                    humantime::format_duration(g.interval)
                );
                for pt in &g.points {
                    outln!(
                        "  {:<32} {:<7} 0x{:04X} {:>4} {:?} scale {} {}",
                        pt.quantity,
                        format!("{:?}", pt.kind).to_lowercase(),
                        pt.address,
                        format!("{:?}", pt.ty).to_lowercase(),
                        pt.order,
                        pt.scale,
                        quantity::unit_of(&pt.quantity).unwrap_or("")
                    );
                }
                for d in &g.dis {
                    let width =
                        if p.protocol == meterd::protocols::profile::ProfileProtocol::Dlt645_1997 {
                            4
                        } else {
                            8
                        };
                    let layout = match d.format {
                        meterd::protocols::dlt645::di::Format::Number {
                            bytes,
                            decimals,
                            signed,
                        } => {
                            format!(
                                "BCD {bytes} bytes, {decimals} decimals{}",
                                if signed { ", signed" } else { "" }
                            )
                        }
                        other => format!("{other:?}"),
                    };
                    outln!(
                        "  {:<32} DI {:0width$X}  {layout:<30} x {} {}",
                        d.quantity,
                        d.di,
                        d.factor,
                        quantity::unit_of(&d.quantity).unwrap_or("")
                    );
                }
                for o in &g.oads {
                    let names: Vec<&str> = o
                        .names
                        .iter()
                        .map(|n| n.as_deref().unwrap_or("-"))
                        .collect();
                    let what =
                        meterd::protocols::dlt698::catalogue::object_name(o.oad.oi).unwrap_or("");
                    outln!(
                        "  OAD {} {:<30} x 10^{:<3} {}",
                        o.oad,
                        what,
                        o.exp,
                        names.join(", ")
                    );
                }
                if g.clock {
                    outln!("  meter_clock_offset_s             from the meter's date and time");
                }
                if g.daily_freeze {
                    outln!("  daily freeze: forward active energy, total and tariffs, stamped with the freeze time");
                }
                if !g.oads.is_empty() {
                    outln!("  ({} OADs in one GET-Request-NormalList)", g.oads.len());
                } else if g.dis.is_empty() && !g.points.is_empty() {
                    let blocks = g.plan(config::DEFAULT_MAX_REGISTERS, config::DEFAULT_MAX_GAP);
                    outln!(
                        "  ({} points in {} read requests)",
                        g.points.len(),
                        blocks.len()
                    );
                }
            }
        }
    }
    Ok(0)
}

/// Rows as columns as wide as their widest cell (in characters), two spaces apart; the fourth
/// column (a count) is right-aligned, and the last is not padded.
fn table(header: &[String; 5], rows: &[[String; 5]]) -> Vec<String> {
    let mut width = [0usize; 5];
    for row in std::iter::once(header).chain(rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    std::iter::once(header)
        .chain(rows)
        .map(|r| {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3],
            )
        })
        .collect()
}
