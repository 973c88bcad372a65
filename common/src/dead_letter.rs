//! Input that could not be decoded is kept, not dropped: a dead letter holds
//! where it came from, why it failed, and the bytes themselves.

use serde::Serialize;

/// One entry of the dead-letter output (a JSON line).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Wall-clock time the failure was seen, epoch ms.
    pub at_ms: i64,
    /// The partition (file, topic partition...) the bytes came from.
    pub source: String,
    /// Position of the bytes in that partition.
    pub position: String,
    /// Records the bytes stand for, when the input framing says.
    pub records: u64,
    /// Short failure kind (`truncated`, `bad-union-index`, `corrupt-block`...).
    pub kind: String,
    /// Human-readable cause.
    pub error: String,
    /// Length of the undecodable bytes.
    pub payload_len: usize,
    /// The bytes, base64, cut to the configured maximum.
    pub payload_base64: String,
    pub payload_truncated: bool,
}

impl DeadLetter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        at_ms: i64,
        source: &str,
        position: String,
        records: u64,
        kind: &str,
        error: String,
        payload: &[u8],
        max_payload: usize,
    ) -> Self {
        let kept = &payload[..payload.len().min(max_payload)];
        DeadLetter {
            at_ms,
            source: source.to_owned(),
            position,
            records,
            kind: kind.to_owned(),
            error,
            payload_len: payload.len(),
            payload_base64: base64(kept),
            payload_truncated: kept.len() < payload.len(),
        }
    }
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn payload_is_cut_but_its_length_kept() {
        let d = DeadLetter::new(
            1,
            "f.avro",
            "0:0".into(),
            3,
            "truncated",
            "x".into(),
            &[1; 100],
            10,
        );
        assert_eq!(d.payload_len, 100);
        assert!(d.payload_truncated);
        assert_eq!(d.payload_base64, base64(&[1; 10]));
    }
}
