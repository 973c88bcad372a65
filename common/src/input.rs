//! Checking inputs before a job starts, so that a wrong file is a clear
//! error at once rather than a stream of dead letters later.

use std::path::Path;

use crate::avro::container::{BlockScanner, ContainerError, Event};
use crate::avro::primitive::Input;
use crate::avro::{DecodePlan, SchemaError};
use crate::reading::Reading;

/// Why an input cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("input {path} is not a readable Avro container file: {source}")]
    Container {
        path: String,
        #[source]
        source: ContainerError,
    },
    #[error("input {path}: its writer schema cannot be read as the contract schema: {source}")]
    Schema {
        path: String,
        #[source]
        source: SchemaError,
    },
    #[error("input {path}: {what}")]
    Damaged { path: String, what: String },
}

/// Reads an Avro container file's header and compiles its writer schema
/// against the contract; returns the decode plan.
pub fn check_avro_file(path: &Path) -> Result<DecodePlan, InputError> {
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|source| InputError::Io {
        path: name.clone(),
        source,
    })?;
    let mut scanner = BlockScanner::new();
    let schema = loop {
        match scanner.read_header() {
            Ok(Some(h)) => break h.schema.clone(),
            Ok(None) => {
                scanner
                    .read_from(&mut file, 64 << 10)
                    .map_err(|source| InputError::Io {
                        path: name.clone(),
                        source,
                    })?;
            }
            Err(source) => return Err(InputError::Container { path: name, source }),
        }
    };
    DecodePlan::from_json(&schema).map_err(|source| InputError::Schema { path: name, source })
}

/// Reads every record of an Avro container file, in order, into `each`.
/// Unlike a job's source, which keeps damage as dead letters and reads on,
/// this stops at the first damaged block (for tools that copy files).
pub fn for_each_reading(
    path: &Path,
    mut each: impl FnMut(&Reading) -> Result<(), InputError>,
) -> Result<u64, InputError> {
    let name = path.display().to_string();
    let plan = check_avro_file(path)?;
    let io = |source| InputError::Io {
        path: name.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut scanner = BlockScanner::new();
    let mut scratch = Vec::new();
    let mut reading = Reading::default();
    let mut count = 0u64;
    let codec = loop {
        match scanner.read_header() {
            Ok(Some(h)) => break h.codec,
            Ok(None) => {}
            Err(source) => return Err(InputError::Container { path: name, source }),
        }
        scanner.read_from(&mut file, 1 << 20).map_err(io)?;
    };
    loop {
        match scanner.next_event() {
            Event::Block {
                offset,
                count: n,
                data,
            } => {
                let damaged = |what: String| InputError::Damaged {
                    path: name.clone(),
                    what: format!("block at byte {offset}: {what}"),
                };
                let data = codec
                    .decompress(data, &mut scratch)
                    .map_err(|e| damaged(e.to_string()))?;
                let mut input = Input::new(data);
                for _ in 0..n {
                    plan.decode_from(&mut input, &mut reading)
                        .map_err(|e| damaged(e.to_string()))?;
                    each(&reading)?;
                    count += 1;
                }
            }
            Event::Corrupt { offset, reason, .. } => {
                return Err(InputError::Damaged {
                    path: name,
                    what: format!("at byte {offset}: {reason}"),
                })
            }
            Event::NeedData => {
                scanner.read_from(&mut file, 1 << 20).map_err(io)?;
            }
            Event::End => return Ok(count),
        }
    }
}
