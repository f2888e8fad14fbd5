//! A smoke run of the scale bench (`cargo bench --bench scale`), so it never rots: the same
//! code, a few meters for a few seconds. Its figures are the bench's business; this checks that
//! every one of them is measured.

use std::time::Duration;

use meterd_testkit::scale::{self, Influx, Model, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_bench_runs_and_measures_every_figure() {
    for (model, influx) in [(Model::Eight, Influx::V1), (Model::Sdm630, Influx::V2)] {
        let s = Scenario {
            meters: 10,
            model,
            interval: Duration::from_secs(1),
            warmup: Duration::from_secs(3),
            window: Duration::from_secs(3),
            mqtt: true,
            influx,
            per_sim: 5,
            concurrency: 2,
        };
        let r = scale::run(&s).await;
        let row = scale::row(&s, &r);
        assert!(r.readings > 0 && r.scheduled > 0, "{row}");
        assert!(r.values >= r.readings as f64 * 8.0, "{row}");
        assert!(r.rss_peak_kib > 0 && r.rss_end_kib > 0, "{row}");
        assert!(r.wakeups > 0, "{row}");
        let names: Vec<&str> = r.sinks.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["mqtt", "influxdb"], "{row}");
        for (name, delivered, lag) in &r.sinks {
            assert!(*delivered > 0, "{name} confirmed nothing: {row}");
            assert!(lag.is_finite(), "{name} lag not measured: {row}");
        }
        assert!(row.starts_with("| 10 |"), "{row}");
    }
}
