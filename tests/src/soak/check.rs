//! The soak's verdict: a job's output against an independent computation
//! of the same readings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value as Json};

use super::{Report, MINUTE, NO_LATENESS};
use crate::expected::{compute, Reading, Rows};
use crate::read_parts;

/// Output rows as JSON objects, one per line of output.
pub struct Output {
    pub sensors_local: Vec<Map<String, Json>>,
    pub aggregates: Vec<Map<String, Json>>,
    pub late: Vec<Map<String, Json>>,
    pub dead_letters: Vec<Map<String, Json>>,
}

/// The lines of the committed parts in `dir`, as JSON objects.
pub fn lines_of(dir: &Path) -> Vec<Map<String, Json>> {
    read_parts(dir)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(Json::Object(m)) => Some(m),
            _ => None,
        })
        .collect()
}

fn number(v: Option<&Json>) -> Option<f64> {
    match v? {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Json>) -> String {
    v.and_then(Json::as_str).unwrap_or_default().to_owned()
}

/// Compares the output with the computation; fills the report's counts.
pub fn check(
    readings: &[Reading],
    output: &Output,
    injected: &BTreeSet<(String, String)>,
    report: &mut Report,
) {
    // Late readings: each once (by source and position), each one of the
    // input's: by device and event time, and among readings of a device in
    // the same millisecond the one of the closest temperature.
    let mut by_key: BTreeMap<(String, i64), Vec<usize>> = BTreeMap::new();
    for (i, r) in readings.iter().enumerate() {
        by_key
            .entry((format!("sensor_{}", r.sensor_id), r.timestamp))
            .or_default()
            .push(i);
    }
    let mut late_input = vec![false; readings.len()];
    let mut positions = BTreeSet::new();
    let mut stray = 0u64;
    for row in &output.late {
        if !positions.insert((text(row.get("source")), text(row.get("position")))) {
            report.duplicated += 1;
            continue;
        }
        let reading: Json = serde_json::from_str(&text(row.get("reading"))).unwrap_or(Json::Null);
        let key = (
            text(row.get("device_id")),
            number(row.get("timestamp_ms")).unwrap_or(f64::NAN) as i64,
        );
        let candidates = by_key.get(&key).map(Vec::as_slice).unwrap_or_default();
        let best = candidates
            .iter()
            .copied()
            .filter(|&i| !late_input[i])
            .max_by_key(|&i| same_fields(&reading, &readings[i]));
        match best {
            Some(i) => late_input[i] = true,
            None => stray += 1,
        }
    }
    report.late_readings = positions.len() as u64;
    report.rows_checked += output.late.len() as u64;
    if stray > 0 {
        report.problems.push(format!(
            "{stray} late readings are not readings of the input"
        ));
    }
    // The readings that were not late go into windows.
    let remaining: Vec<Reading> = readings
        .iter()
        .zip(&late_input)
        .filter(|(_, late)| !**late)
        .map(|(r, _)| r.clone())
        .collect();
    // Every reading counted once: in a window or late.
    let in_windows: u64 = output
        .aggregates
        .iter()
        .filter_map(|r| number(r.get("readings")))
        .map(|n| n as u64)
        .sum();
    let accounted = in_windows + positions.len() as u64;
    if accounted != readings.len() as u64 {
        report.problems.push(format!(
            "{} readings in the input, {in_windows} in windows and {} late: {}",
            readings.len(),
            positions.len(),
            if accounted > readings.len() as u64 {
                "some counted twice"
            } else {
                "some lost"
            }
        ));
    }
    let expected = compute(&[("all".to_owned(), remaining)], MINUTE, NO_LATENESS);
    compare(
        "sensors_local",
        &expected.sensors_local,
        &output.sensors_local,
        "time",
        report,
    );
    compare(
        "sensor_aggregates_1m",
        &expected.aggregates,
        &output.aggregates,
        "window_start",
        report,
    );
    // Dead letters: every injected message once.
    let mut letters = BTreeSet::new();
    for l in &output.dead_letters {
        let key = (text(l.get("source")), text(l.get("position")));
        if !letters.insert(key.clone()) {
            report.duplicated += 1;
        } else if !injected.contains(&key) {
            report
                .problems
                .push(format!("an unexpected dead letter {key:?}"));
        }
    }
    report.lost += injected.difference(&letters).count() as u64;
    report.rows_checked += output.dead_letters.len() as u64;
}

/// How many measurements of a late reading's JSON equal the input
/// reading's (to tell apart readings of a device in the same millisecond).
/// Within a relative 1e-12: serde_json's default float parsing can be a
/// unit in the last place off.
fn same_fields(json: &Json, r: &Reading) -> usize {
    [
        ("temperature", r.temperature),
        ("humidity", r.humidity),
        ("pressure", r.pressure),
        ("batteryLevel", r.battery_level),
        ("co2Level", r.co2_level),
        ("noiseLevel", r.noise_level),
        ("lightLevel", r.light_level),
        ("signalStrength", r.signal_strength),
        ("bytesSent", r.bytes_sent as f64),
        ("bytesReceived", r.bytes_received as f64),
    ]
    .iter()
    .filter(|(name, v)| {
        json[*name]
            .as_f64()
            .is_some_and(|j| j == *v || (j - v).abs() <= 1e-12 * j.abs().max(v.abs()))
    })
    .count()
}

/// Counts the rows of `expected` missing from `actual`, rows there twice,
/// and rows that differ or that the computation does not have.
fn compare(
    table: &str,
    expected: &Rows,
    actual: &[Map<String, Json>],
    time_column: &str,
    report: &mut Report,
) {
    report.rows_checked += actual.len() as u64;
    let mut seen: BTreeMap<(String, u64), &Map<String, Json>> = BTreeMap::new();
    for row in actual {
        let key = (
            text(row.get("device_id")),
            number(row.get(time_column)).unwrap_or(-1.0) as u64,
        );
        if seen.insert(key, row).is_some() {
            report.duplicated += 1;
        }
    }
    let mut wrong_examples = Vec::new();
    for (key, want) in expected {
        let Some(got) = seen.get(key) else {
            report.lost += 1;
            continue;
        };
        // As `assert_rows_match` compares: strings as strings, numbers
        // (ClickHouse quotes 64-bit ones) within 1e-9 relative.
        let mut columns: Vec<(&String, &Json)> = want.iter().collect();
        // The count first: it tells a reading too many from one too few.
        columns.sort_by_key(|(c, _)| c.as_str() != "readings");
        let differences: Vec<String> = columns
            .into_iter()
            .filter_map(|(col, w)| {
                let g = got.get(col);
                let same = match (w, g) {
                    (Json::String(a), Some(Json::String(b))) if number(Some(w)).is_none() => a == b,
                    _ => match (number(Some(w)), number(g)) {
                        (Some(a), Some(b)) => {
                            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
                        }
                        _ => Some(w) == g,
                    },
                };
                (!same).then(|| format!("{col} {} (expected {w})", g.unwrap_or(&Json::Null)))
            })
            .collect();
        if !differences.is_empty() {
            report.wrong += 1;
            if wrong_examples.len() < 3 {
                wrong_examples.push(format!("{key:?}: {}", differences.join(", ")));
            }
        }
    }
    let unexpected = seen.keys().filter(|k| !expected.contains_key(*k)).count() as u64;
    report.wrong += unexpected;
    if !wrong_examples.is_empty() || unexpected > 0 {
        report.problems.push(format!(
            "{table}: {unexpected} rows the computation does not have; differing rows such as {}",
            wrong_examples.join(", ")
        ));
    }
}
