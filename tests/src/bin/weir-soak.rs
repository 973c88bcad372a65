//! Runs the fault-injection soak for as long as it is told and prints its
//! figures (`scripts/soak.sh` sets the environment: `SOAK_MINUTES`,
//! `SOAK_FAULT_EVERY_S`, `SOAK_SEED`, `SOAK_RATE`, `SOAK_DEVICES`,
//! `SOAK_SINK`). Exits 1 unless the output is exactly once. Its directory
//! is kept for inspection.

fn main() {
    let config = weir_tests::soak::config_from_env();
    let dir = weir_tests::soak::kept_dir(match config.sink {
        weir_tests::soak::Sink::ClickHouse => "clickhouse",
        weir_tests::soak::Sink::Jsonl => "jsonl",
    });
    println!("soak: {config:?} in {}", dir.display());
    let report = weir_tests::soak::run(&dir, &config);
    report.print();
    if !report.is_exact() {
        std::process::exit(1);
    }
}
