//! `weir gen`: contract Avro container files from the generator, so tests
//! and benchmarks need no other tool. The same arguments always produce the
//! same bytes.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use weir_common::avro::container::{Codec, ContainerWriter};
use weir_common::avro::encode::encode_reading;
use weir_common::avro::CONTRACT_SCHEMA;
use weir_common::generator::{GeneratorParams, PartitionGenerator, Rng};
use weir_common::reading::Reading;
use weir_common::spec::GENERATOR_EPOCH_MS;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CodecArg {
    Null,
    Deflate,
    Snappy,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// Output file; with --partitions P > 1, files NAME-0.avro ... NAME-(P-1).avro.
    #[arg(long, value_name = "FILE.avro")]
    pub out: PathBuf,
    /// Total readings (over all partitions).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Distinct devices (sensor ids 1..=D).
    #[arg(long, default_value_t = 500)]
    pub devices: u32,
    /// Readings per second of event time.
    #[arg(long, default_value_t = 30_000.0)]
    pub rate: f64,
    /// Readings arrive up to this many ms after their event time.
    #[arg(long, default_value_t = 0)]
    pub disorder_ms: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Files to spread devices over (by sensorId % P).
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Event time of the first reading, epoch ms (default 2025-10-10T00:00:00Z).
    #[arg(long)]
    pub start_ms: Option<i64>,
    #[arg(long, value_enum, default_value = "null")]
    pub codec: CodecArg,
}

/// The file of partition `i` of `n`.
pub fn partition_path(out: &Path, i: u32, n: u32) -> PathBuf {
    if n == 1 {
        return out.to_owned();
    }
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("readings");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("avro");
    out.with_file_name(format!("{stem}-{i}.{ext}"))
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if args.partitions == 0 || args.partitions > args.devices {
        bail!(
            "--partitions must be between 1 and --devices ({})",
            args.devices
        );
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of readings per second");
    }
    let params = GeneratorParams {
        devices: args.devices,
        rate: args.rate,
        disorder_ms: args.disorder_ms,
        seed: args.seed,
        records: Some(args.records),
        start_ms: args.start_ms.unwrap_or(GENERATOR_EPOCH_MS),
        partitions: args.partitions,
    };
    let codec = match args.codec {
        CodecArg::Null => Codec::Null,
        CodecArg::Deflate => Codec::Deflate,
        CodecArg::Snappy => Codec::Snappy,
    };
    for p in 0..args.partitions {
        let path = partition_path(&args.out, p, args.partitions);
        let n = write_partition(&path, &params, p, codec)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}: {n} readings", path.display());
    }
    Ok(())
}

fn write_partition(
    path: &Path,
    params: &GeneratorParams,
    p: u32,
    codec: Codec,
) -> anyhow::Result<u64> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    // The sync marker comes from the seed, so output is reproducible.
    let mut rng = Rng::new(params.seed ^ (u64::from(p) << 32) ^ 0x5eed);
    let mut sync = [0u8; 16];
    sync[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    sync[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let mut writer = ContainerWriter::new(file, CONTRACT_SCHEMA, codec, sync)?;
    let mut generator = PartitionGenerator::new(params, p);
    let mut reading = Reading::default();
    while generator.next_into(&mut reading) {
        writer.append_with(|buf| encode_reading(&reading, buf))?;
    }
    writer.finish()?;
    Ok(generator.emitted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_file_names() {
        assert_eq!(
            partition_path(Path::new("/d/x.avro"), 0, 1),
            PathBuf::from("/d/x.avro")
        );
        assert_eq!(
            partition_path(Path::new("/d/x.avro"), 2, 4),
            PathBuf::from("/d/x-2.avro")
        );
    }
}
