//! Validating large configs: cost must grow linearly with meters and with errors (reporting
//! 20,000 errors once took 12.6 s because each located its line by scanning from the top).
use criterion::{criterion_group, criterion_main, Criterion};

fn config(meters: usize, unit_of: impl Fn(usize) -> usize) -> String {
    let mut text = String::from("[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n");
    for i in 0..meters {
        if i % 200 == 0 {
            text += &format!(
                "[[bus]]\nname = \"b{i}\"\nprotocol = \"modbus-tcp\"\ntcp = \"127.0.0.1:{}\"\n",
                1000 + i / 200
            );
        }
        text += &format!(
            "[[bus.meter]]\nid = \"m{i}\"\nunit = {}\nprofile = \"eastron-sdm120\"\n",
            unit_of(i)
        );
    }
    text
}

fn validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.sample_size(10);
    for meters in [6_000usize, 60_000] {
        let good = config(meters, |i| i % 200 + 1);
        g.bench_function(format!("{meters} meters, valid"), |b| {
            b.iter(|| meterd::config::load_str(&good, "t.toml").map(|c| c.buses.len()))
        });
    }
    for errors in [2_000usize, 20_000] {
        // Every meter on its bus has unit 1: one error per meter after the first.
        let bad = config(errors, |_| 1);
        g.bench_function(format!("{errors} meters, an error each"), |b| {
            b.iter(|| {
                meterd::config::load_str(&bad, "t.toml")
                    .err()
                    .map(|e| e.0.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
