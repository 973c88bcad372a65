//! Hand-built Avro container files for bad-input tests, written here (not
//! with Weir's writer) so that damage can be placed exactly.

use std::path::Path;

use apache_avro::types::Value;
use apache_avro::Schema;

pub const SYNC: [u8; 16] = *b"weir-test-sync!!";

pub fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    zigzag(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Writes a null-codec container: `blocks` are (declared record count, data).
pub fn write_container(path: &Path, schema_json: &str, blocks: &[(i64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(b"Obj\x01");
    zigzag(&mut out, 2);
    bytes(&mut out, b"avro.schema");
    bytes(&mut out, schema_json.as_bytes());
    bytes(&mut out, b"avro.codec");
    bytes(&mut out, b"null");
    zigzag(&mut out, 0);
    out.extend_from_slice(&SYNC);
    for (count, data) in blocks {
        zigzag(&mut out, *count);
        zigzag(&mut out, data.len() as i64);
        out.extend_from_slice(data);
        out.extend_from_slice(&SYNC);
    }
    std::fs::write(path, out).expect("write container");
}

/// The binary datum of `value` (apache-avro's encoder).
pub fn datum(schema: &Schema, value: &Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value.clone()))
        .expect("encode datum")
}

/// Every record of a (whole) container file as values, with its schema.
pub fn values(path: &Path) -> (Schema, Vec<Value>) {
    let file = std::fs::File::open(path).expect("open");
    let reader = apache_avro::Reader::new(std::io::BufReader::new(file)).expect("header");
    let schema = reader.writer_schema().clone();
    let values = reader.map(|v| v.expect("record")).collect();
    (schema, values)
}

/// Rewrites the container at `source` into `out` in blocks of 100 records
/// with a datum that cannot be decoded (a varint that never ends) before
/// record 10 of block `block`. The readers skip the rest of that block:
/// the values returned are the readings a correct job aggregates, and the
/// dead letter stands for 91 records (90 and the garbage).
pub fn with_garbage_datum(source: &Path, out: &Path, block: usize) -> Vec<Value> {
    let (schema, vals) = values(source);
    let mut blocks = Vec::new();
    let mut good = Vec::new();
    for (b, chunk) in vals.chunks(100).enumerate() {
        let mut data = Vec::new();
        let mut count = chunk.len() as i64;
        for (i, v) in chunk.iter().enumerate() {
            if b == block && i == 10 {
                data.extend_from_slice(&[0xff; 11]);
                count += 1;
            }
            data.extend(datum(&schema, v));
            if !(b == block && i >= 10) {
                good.push(v.clone());
            }
        }
        blocks.push((count, data));
    }
    write_container(out, &schema.canonical_form(), &blocks);
    good
}
