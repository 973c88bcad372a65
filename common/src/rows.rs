//! Output rows, field for field the columns of the ClickHouse tables (see
//! `ddl.sql`). The same structs are written as JSON lines by the JSONL sink,
//! so both sinks produce the same columns; `DateTime` columns are epoch
//! seconds in both. Identifiers are [`ShortStr`]s: a closing window makes
//! millions of rows, and none of them touches the heap.

use serde::{Deserialize, Serialize};

use crate::reading::ShortStr;

/// One row of `sensors_local`: window averages and sums per device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct SensorsLocalRow {
    pub device_id: ShortStr,
    pub device_type: ShortStr,
    pub customer_id: ShortStr,
    pub site_id: ShortStr,
    pub latitude: f64,
    pub longitude: f64,
    pub altitude: f64,
    /// Window end, epoch seconds.
    pub time: u32,
    pub temperature: f64,
    pub humidity: f64,
    pub pressure: f64,
    pub co2_level: f64,
    pub noise_level: f64,
    pub light_level: f64,
    pub motion_detected: u8,
    pub battery_level: f64,
    pub signal_strength: f64,
    pub memory_usage: f64,
    pub cpu_usage: f64,
    pub status: u8,
    pub error_count: u32,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// One row of `sensor_aggregates_1m`: count and min/avg/max per measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct SensorAggregatesRow {
    pub device_id: ShortStr,
    pub window_start: u32,
    pub window_end: u32,
    pub readings: u64,
    pub temperature_min: f64,
    pub temperature_avg: f64,
    pub temperature_max: f64,
    pub humidity_min: f64,
    pub humidity_avg: f64,
    pub humidity_max: f64,
    pub pressure_min: f64,
    pub pressure_avg: f64,
    pub pressure_max: f64,
    pub battery_min: f64,
    pub battery_avg: f64,
    pub battery_max: f64,
    pub co2_min: f64,
    pub co2_avg: f64,
    pub co2_max: f64,
    pub noise_min: f64,
    pub noise_avg: f64,
    pub noise_max: f64,
    pub light_min: f64,
    pub light_avg: f64,
    pub light_max: f64,
    pub signal_min: f64,
    pub signal_avg: f64,
    pub signal_max: f64,
    pub error_count: u64,
    pub motion_readings: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// A reading that arrived after its window had closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct LateReadingRow {
    pub device_id: ShortStr,
    /// Event time, epoch seconds (the exact value is in `timestamp_ms`).
    pub event_time: u32,
    pub timestamp_ms: i64,
    /// End of the window the reading belonged to, epoch seconds.
    pub window_end: u32,
    /// The window task's watermark when the reading arrived.
    pub watermark_ms: i64,
    /// The partition the reading came from (file path, topic partition...).
    pub source: String,
    /// Its position within that partition; with `source`, a unique key.
    pub position: String,
    /// The whole reading as JSON, so nothing of it is lost.
    pub reading: String,
}

/// The output tables, in the order the sink writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    SensorsLocal,
    SensorAggregates,
    LateReadings,
}

impl Table {
    pub const ALL: [Table; 3] = [
        Table::SensorsLocal,
        Table::SensorAggregates,
        Table::LateReadings,
    ];

    /// Default table (and JSONL file) name.
    pub fn default_name(self) -> &'static str {
        match self {
            Table::SensorsLocal => "sensors_local",
            Table::SensorAggregates => "sensor_aggregates_1m",
            Table::LateReadings => "late_readings",
        }
    }

    /// Columns in insert order, with the ClickHouse type Weir writes. Used to
    /// check an existing table before writing to it, since RowBinary without
    /// validation would otherwise misread a mismatched table silently.
    pub fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Table::SensorsLocal => &[
                ("device_id", "String"),
                ("device_type", "String"),
                ("customer_id", "String"),
                ("site_id", "String"),
                ("latitude", "Float64"),
                ("longitude", "Float64"),
                ("altitude", "Float64"),
                ("time", "DateTime"),
                ("temperature", "Float64"),
                ("humidity", "Float64"),
                ("pressure", "Float64"),
                ("co2_level", "Float64"),
                ("noise_level", "Float64"),
                ("light_level", "Float64"),
                ("motion_detected", "UInt8"),
                ("battery_level", "Float64"),
                ("signal_strength", "Float64"),
                ("memory_usage", "Float64"),
                ("cpu_usage", "Float64"),
                ("status", "UInt8"),
                ("error_count", "UInt32"),
                ("packets_sent", "UInt64"),
                ("packets_received", "UInt64"),
                ("bytes_sent", "UInt64"),
                ("bytes_received", "UInt64"),
            ],
            Table::SensorAggregates => &[
                ("device_id", "String"),
                ("window_start", "DateTime"),
                ("window_end", "DateTime"),
                ("readings", "UInt64"),
                ("temperature_min", "Float64"),
                ("temperature_avg", "Float64"),
                ("temperature_max", "Float64"),
                ("humidity_min", "Float64"),
                ("humidity_avg", "Float64"),
                ("humidity_max", "Float64"),
                ("pressure_min", "Float64"),
                ("pressure_avg", "Float64"),
                ("pressure_max", "Float64"),
                ("battery_min", "Float64"),
                ("battery_avg", "Float64"),
                ("battery_max", "Float64"),
                ("co2_min", "Float64"),
                ("co2_avg", "Float64"),
                ("co2_max", "Float64"),
                ("noise_min", "Float64"),
                ("noise_avg", "Float64"),
                ("noise_max", "Float64"),
                ("light_min", "Float64"),
                ("light_avg", "Float64"),
                ("light_max", "Float64"),
                ("signal_min", "Float64"),
                ("signal_avg", "Float64"),
                ("signal_max", "Float64"),
                ("error_count", "UInt64"),
                ("motion_readings", "UInt64"),
                ("bytes_sent", "UInt64"),
                ("bytes_received", "UInt64"),
            ],
            Table::LateReadings => &[
                ("device_id", "String"),
                ("event_time", "DateTime"),
                ("timestamp_ms", "Int64"),
                ("window_end", "DateTime"),
                ("watermark_ms", "Int64"),
                ("source", "String"),
                ("position", "String"),
                ("reading", "String"),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column lists used for the schema check must name the struct
    /// fields in order, or inserts would be checked against the wrong layout.
    #[test]
    fn column_lists_match_row_fields_in_order() {
        use clickhouse::Row;
        for (table, fields) in [
            (Table::SensorsLocal, SensorsLocalRow::COLUMN_NAMES),
            (Table::SensorAggregates, SensorAggregatesRow::COLUMN_NAMES),
            (Table::LateReadings, LateReadingRow::COLUMN_NAMES),
        ] {
            let names: Vec<&str> = table.columns().iter().map(|c| c.0).collect();
            assert_eq!(names, fields, "{table:?}");
        }
    }
}
