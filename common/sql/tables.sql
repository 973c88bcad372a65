-- Output tables of Weir's IoT job. `weir ddl` prints these statements with
-- the database and table names of a job spec filled in (`{database}`,
-- `{sensors_local}`, `{sensor_aggregates_1m}`, `{late_readings}`);
-- `weir ddl --apply` runs them. They run on ClickHouse 18.16 and later.
-- The first two tables are the data contract's, unchanged.

CREATE DATABASE IF NOT EXISTS {database};

-- One row per device per closed 1-minute event-time window, in the layout of
-- the existing `benchmark.sensors_local` table that the dashboards read:
-- readings are window averages, counters are window sums, `time` is the
-- window end.
CREATE TABLE IF NOT EXISTS {database}.{sensors_local}
(
    device_id        String,
    device_type      String,
    customer_id      String,
    site_id          String,
    latitude         Float64,
    longitude        Float64,
    altitude         Float64,
    time             DateTime,
    temperature      Float64,
    humidity         Float64,
    pressure         Float64,
    co2_level        Float64,
    noise_level      Float64,
    light_level      Float64,
    motion_detected  UInt8,
    battery_level    Float64,
    signal_strength  Float64,
    memory_usage     Float64,
    cpu_usage        Float64,
    status           UInt8,
    error_count      UInt32,
    packets_sent     UInt64,
    packets_received UInt64,
    bytes_sent       UInt64,
    bytes_received   UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (device_id, time);

-- The full picture of each window: count and min/avg/max of every reading.
CREATE TABLE IF NOT EXISTS {database}.{sensor_aggregates_1m}
(
    device_id        String,
    window_start     DateTime,
    window_end       DateTime,
    readings         UInt64,
    temperature_min  Float64, temperature_avg  Float64, temperature_max  Float64,
    humidity_min     Float64, humidity_avg     Float64, humidity_max     Float64,
    pressure_min     Float64, pressure_avg     Float64, pressure_max     Float64,
    battery_min      Float64, battery_avg      Float64, battery_max      Float64,
    co2_min          Float64, co2_avg          Float64, co2_max          Float64,
    noise_min        Float64, noise_avg        Float64, noise_max        Float64,
    light_min        Float64, light_avg        Float64, light_max        Float64,
    signal_min       Float64, signal_avg       Float64, signal_max       Float64,
    error_count      UInt64,
    motion_readings  UInt64,
    bytes_sent       UInt64,
    bytes_received   UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(window_end)
ORDER BY (device_id, window_start);

-- Readings that arrived after their window had closed (late.policy: output).
-- `source` and `position` say where each came from and together identify it;
-- `reading` holds all of its fields as JSON.
CREATE TABLE IF NOT EXISTS {database}.{late_readings}
(
    device_id     String,
    event_time    DateTime,
    timestamp_ms  Int64,
    window_end    DateTime,
    watermark_ms  Int64,
    source        String,
    position      String,
    reading       String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (source, position);
