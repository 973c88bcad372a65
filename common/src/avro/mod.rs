//! Avro for the contract schema: resolution, decoding, encoding, containers.
//!
//! Decoding is the hottest code in Weir, so it does not go through a generic
//! `Value` tree. Instead [`resolve::DecodePlan`] compiles a writer schema
//! against the contract's reader schema once (Avro schema resolution:
//! promotions, defaults for missing fields, skipping of unknown fields,
//! union branches) into a flat list of typed operations, and
//! [`DecodePlan::decode`](resolve::DecodePlan::decode) runs them over the
//! datum bytes straight into a [`Reading`](crate::reading::Reading), with no
//! allocation. `apache-avro` parses schemas and is the independent reader the
//! tests compare against.

pub mod container;
pub mod encode;
pub mod primitive;
pub mod resolve;

pub use resolve::{DecodeError, DecodePlan, SchemaError};

/// The contract's writer/reader schema (`contract/sensor_data.avsc`).
pub const CONTRACT_SCHEMA: &str = include_str!("../../contract/sensor_data.avsc");

/// apache-avro as an independent encoder/decoder for tests.
#[cfg(test)]
pub(crate) mod test_support {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Schema;

    pub fn to_datum(schema: &Schema, value: Value) -> Vec<u8> {
        GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("apache-avro encodes the value")
    }

    pub fn from_datum(schema: &Schema, bytes: &[u8]) -> Value {
        GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut &bytes[..]))
            .expect("apache-avro decodes the datum")
    }
}
