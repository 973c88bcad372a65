//! What the coordinator's and the workers' `/metrics` share: the
//! OpenMetrics text of a `prometheus-client` registry, and metrics that
//! carry a value read at scrape time (each scrape fills a fresh registry
//! from the processes' own counters, so these are set once, never updated).

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub type FloatGauge = Gauge<f64, AtomicU64>;
pub type UnsignedGauge = Gauge<u64, AtomicU64>;

pub fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

pub fn signed(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

pub fn unsigned(v: u64) -> UnsignedGauge {
    let g = UnsignedGauge::default();
    g.set(v);
    g
}

pub fn float(v: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(v);
    g
}

/// The exposition of `registry`, ending in `# EOF`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String has no error to report; the encoder's own
    // errors come only from the writer.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The families of an exposition, by the name queries use (counters with
/// their `_total`), with their type: what the `EXPOSED` lists of the two
/// `/metrics` are checked against.
pub fn families(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            (name, kind.to_owned())
        })
        .collect()
}

/// Panics unless `text` is one exposition (one `# EOF`, at its end) that
/// holds every family of `exposed` once and no other: the check both
/// `/metrics` tests make of their `EXPOSED` lists.
pub fn assert_exposes_each_once(text: &str, exposed: &[(&str, &str)]) {
    let listed: BTreeSet<(String, String)> = exposed
        .iter()
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect();
    assert_eq!(families(text), listed, "{text}");
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(types, exposed.len(), "each family once:\n{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.ends_with("# EOF\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposition_lists_its_families_with_counters_by_their_sample_name() {
        let mut r = Registry::default();
        r.register("weir_a", "A counter", counter(3));
        r.register("weir_b", "A gauge", signed(-2));
        r.register("weir_c", "A float", float(0.5));
        let text = encode(&r);
        assert!(text.lines().any(|l| l == "weir_a_total 3"), "{text}");
        assert!(text.lines().any(|l| l == "weir_b -2"), "{text}");
        assert!(text.lines().any(|l| l == "weir_c 0.5"), "{text}");
        assert_eq!(text.lines().filter(|l| *l == "# EOF").count(), 1);
        assert_eq!(
            families(&text),
            [
                ("weir_a_total", "counter"),
                ("weir_b", "gauge"),
                ("weir_c", "gauge")
            ]
            .iter()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect()
        );
    }
}
