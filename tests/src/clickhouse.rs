//! A real ClickHouse server for one test: Debian's `clickhouse-server`
//! (18.16) as a plain process with its own config and data directory on free
//! loopback ports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
use crate::{free_port, http, wait_for};

pub struct ClickHouse {
    dir: PathBuf,
    http_port: u16,
    tcp_port: u16,
    proc: Option<Proc>,
    starts: u32,
}

fn server_binary() -> PathBuf {
    for p in ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("clickhouse-server is not installed; run scripts/test.sh, which installs it")
}

impl ClickHouse {
    /// Starts a server whose files live under `dir`.
    pub fn start(dir: &Path) -> ClickHouse {
        let dir = dir.join("clickhouse");
        std::fs::create_dir_all(dir.join("data")).expect("clickhouse data dir");
        let mut ch = ClickHouse {
            http_port: 0,
            tcp_port: 0,
            dir,
            proc: None,
            starts: 0,
        };
        // A free port is free only until someone else binds it (another
        // test's process, between our probe and the server's bind): a
        // server that finds its port taken is started again on new ones.
        for attempt in 1.. {
            ch.http_port = free_port();
            ch.tcp_port = free_port();
            while ch.tcp_port == ch.http_port {
                ch.tcp_port = free_port();
            }
            ch.write_config();
            let _ = std::fs::remove_file(ch.dir.join("server.err.log"));
            match ch.try_launch() {
                Ok(()) => break,
                Err(e) if attempt < 5 && e.contains("Address already in use") => {
                    eprintln!("clickhouse: a port was taken meanwhile; new ports");
                }
                Err(e) => panic!("{e}"),
            }
        }
        ch
    }

    fn write_config(&self) {
        let d = self.dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/server.log</log>
        <errorlog>{d}/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/data/tmp/</tmp_path>
    <user_files_path>{d}/data/user_files/</user_files_path>
    <format_schema_path>{d}/data/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;
        std::fs::write(self.dir.join("config.xml"), config).expect("write config");
        std::fs::write(self.dir.join("users.xml"), users).expect("write users");
    }

    fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it answers; `Err`: it exited, with
    /// its own words.
    fn try_launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut cmd = Command::new(server_binary());
        cmd.arg(format!("--config-file={}/config.xml", self.dir.display()))
            .current_dir(&self.dir);
        let proc = Proc::spawn(&format!("clickhouse-{}", self.starts), cmd, &self.dir);
        self.proc = Some(proc);
        let port = self.http_port;
        let dir = self.dir.clone();
        let mut died = None;
        wait_for(
            "ClickHouse to accept queries",
            Duration::from_secs(60),
            || {
                matches!(http::post(port, "SELECT 1"), Ok((200, _))) || {
                    // Fail fast with the server's own words if it died.
                    if let Some(p) = self.proc.as_mut() {
                        if let Some(status) = p.try_status() {
                            let err = std::fs::read_to_string(dir.join("server.err.log"))
                                .unwrap_or_default();
                            died = Some(format!(
                                "clickhouse-server exited with {status}\n{}\n{err}",
                                p.logs()
                            ));
                            return true;
                        }
                    }
                    false
                }
            },
        );
        match died {
            Some(e) => {
                self.proc = None;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The HTTP URL Weir connects to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Runs a query; `Err` holds ClickHouse's message.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        match http::post(self.http_port, sql) {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("HTTP {status}: {body}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs a query that must succeed.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("query failed: {sql}\n{e}"))
    }

    /// `SELECT count() FROM table` (0 while the server is unreachable).
    pub fn count(&self, table: &str) -> u64 {
        self.try_query(&format!("SELECT count() FROM {table}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("KILL");
            p.wait(Duration::from_secs(30));
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Freezes the server (SIGSTOP) until [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(p) = &self.proc {
            p.signal("STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(p) = &self.proc {
            p.signal("CONT");
        }
    }
}

/// Columns of the contract tables, with DateTime columns read as epoch
/// seconds so they compare as numbers.
fn select_list(table: &str) -> &'static str {
    match table {
        "sensors_local" => {
            "device_id, device_type, customer_id, site_id, latitude, longitude, altitude, \
             toUInt32(time) AS time, temperature, humidity, pressure, co2_level, noise_level, \
             light_level, motion_detected, battery_level, signal_strength, memory_usage, cpu_usage, \
             status, error_count, packets_sent, packets_received, bytes_sent, bytes_received"
        }
        "sensor_aggregates_1m" => {
            "device_id, toUInt32(window_start) AS window_start, toUInt32(window_end) AS window_end, \
             readings, temperature_min, temperature_avg, temperature_max, humidity_min, humidity_avg, \
             humidity_max, pressure_min, pressure_avg, pressure_max, battery_min, battery_avg, \
             battery_max, co2_min, co2_avg, co2_max, noise_min, noise_avg, noise_max, light_min, \
             light_avg, light_max, signal_min, signal_avg, signal_max, error_count, motion_readings, \
             bytes_sent, bytes_received"
        }
        "late_readings" => {
            "device_id, toUInt32(event_time) AS event_time, timestamp_ms, \
             toUInt32(window_end) AS window_end, watermark_ms, source, position, reading"
        }
        other => panic!("unknown table {other}"),
    }
}

impl ClickHouse {
    /// Every row of a contract table as JSON objects (no FINAL: exactly
    /// what a dashboard would read).
    pub fn rows(
        &self,
        database: &str,
        table: &str,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let sql = format!(
            "SELECT {} FROM {database}.{table} FORMAT JSONEachRow",
            select_list(table)
        );
        self.query(&sql)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match serde_json::from_str(l) {
                Ok(serde_json::Value::Object(m)) => m,
                other => panic!("bad JSON row {l}: {other:?}"),
            })
            .collect()
    }

    /// A contract table's rows keyed like [`crate::expected::Rows`]; panics
    /// on a duplicate (device, time) — exactly-once means none.
    pub fn keyed_rows(
        &self,
        database: &str,
        table: &str,
        time_column: &str,
    ) -> crate::expected::Rows {
        let sql = format!(
            "SELECT {} FROM {database}.{table} FORMAT JSONEachRow",
            select_list(table)
        );
        crate::expected::rows_from_json_lines(&self.query(&sql), time_column)
    }
}

impl ClickHouse {
    /// Creates `database`'s tables with `weir ddl --apply` (the DDL Weir
    /// ships), and stops background merges on them, so that
    /// ReplacingMergeTree cannot hide a duplicate from exactly-once checks.
    pub fn apply_weir_ddl(&self, dir: &Path, database: &str) {
        let args: Vec<String> = [
            "ddl",
            "--apply",
            "--clickhouse",
            &self.url(),
            "--database",
            database,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut ddl = crate::weir(dir, &format!("ddl-{database}"), &args);
        ddl.wait_success(Duration::from_secs(60));
        for table in ["sensors_local", "sensor_aggregates_1m", "late_readings"] {
            self.query(&format!("SYSTEM STOP MERGES {database}.{table}"));
        }
    }

    /// Checks both contract tables of `database` row by row (and that no
    /// (device, window) appears twice).
    pub fn check_contract_tables(&self, database: &str, expected: &crate::expected::Expected) {
        crate::expected::assert_rows_match(
            "sensors_local",
            &expected.sensors_local,
            &self.keyed_rows(database, "sensors_local", "time"),
        );
        crate::expected::assert_rows_match(
            "sensor_aggregates_1m",
            &expected.aggregates,
            &self.keyed_rows(database, "sensor_aggregates_1m", "window_start"),
        );
    }
}
