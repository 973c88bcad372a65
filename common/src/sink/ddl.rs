//! The DDL Weir ships for its output tables.

use crate::spec::TableNames;

const TEMPLATE: &str = include_str!("../../sql/tables.sql");

/// The DDL script with names filled in, comments included (for `weir ddl`).
pub fn script(database: &str, tables: &TableNames) -> String {
    TEMPLATE
        .replace("{database}", database)
        .replace("{sensors_local}", &tables.sensors_local)
        .replace("{sensor_aggregates_1m}", &tables.sensor_aggregates_1m)
        .replace("{late_readings}", &tables.late_readings)
}

/// The same script split into single statements without comments, since the
/// ClickHouse HTTP interface runs one statement per request.
pub fn statements(database: &str, tables: &TableNames) -> Vec<String> {
    let text: String = script(database, tables)
        .lines()
        .map(|line| match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weir's DDL creates the contract's tables exactly as the contract
    /// writes them.
    #[test]
    fn contract_tables_are_verbatim() {
        let contract = include_str!("../../contract/clickhouse.sql");
        let ours = statements("benchmark", &TableNames::default());
        let strip = |s: &str| -> String { s.split_whitespace().collect::<Vec<_>>().join(" ") };
        let contract_statements: Vec<String> = contract
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .split(';')
            .map(strip)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(contract_statements.len(), 3);
        let ours: Vec<String> = ours.iter().map(|s| strip(s)).collect();
        for statement in &contract_statements {
            assert!(ours.contains(statement), "missing: {statement}");
        }
        assert_eq!(ours.len(), 4);
        assert!(ours[3].contains("benchmark.late_readings"));
    }

    #[test]
    fn names_are_substituted() {
        let tables = TableNames {
            sensors_local: "a".into(),
            sensor_aggregates_1m: "b".into(),
            late_readings: "c".into(),
        };
        let s = statements("iot", &tables);
        assert!(s[0].ends_with("iot"));
        assert!(s[1].contains("iot.a") && s[2].contains("iot.b") && s[3].contains("iot.c"));
        assert!(!script("iot", &tables).contains('{'));
    }
}
