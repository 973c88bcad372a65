//! Checking inputs before a job starts, so that a wrong file is a clear
//! error at once rather than a stream of dead letters later.

use std::io::Read;
use std::path::Path;

use crate::avro::container::{BlockScanner, ContainerError};
use crate::avro::{DecodePlan, SchemaError};

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
    let mut buf = vec![0u8; 64 << 10];
    let schema = loop {
        match scanner.read_header() {
            Ok(Some(h)) => break h.schema.clone(),
            Ok(None) => {
                let n = file.read(&mut buf).map_err(|source| InputError::Io {
                    path: name.clone(),
                    source,
                })?;
                if n == 0 {
                    scanner.finish();
                } else {
                    scanner.feed(&buf[..n]);
                }
            }
            Err(source) => return Err(InputError::Container { path: name, source }),
        }
    };
    DecodePlan::from_json(&schema).map_err(|source| InputError::Schema { path: name, source })
}
