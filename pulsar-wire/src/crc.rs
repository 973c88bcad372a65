//! The frame checksum: CRC-32C (Castagnoli, "CRC-32/ISCSI").

/// CRC-32C of `bytes`, as Pulsar computes it over a frame's metadata and
/// payload.
///
/// `crc-fast` picks the fastest kernel the CPU has at run time (SSE4.2 and
/// PCLMULQDQ on x86-64, CRC and PMULL on ARMv8, tables otherwise): the
/// checksum covers every byte received, so it must run at memory speed.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_catalogue_check_value() {
        // https://reveng.sourceforge.io/crc-catalogue/all.htm#crc.cat.crc-32-iscsi
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn matches_a_bitwise_reference_on_every_length() {
        // Lengths around the SIMD kernels' block sizes, and odd alignments.
        let data: Vec<u8> = (0..1200u32)
            .map(|i| (i.wrapping_mul(131) >> 3) as u8)
            .collect();
        for start in 0..8 {
            for end in (start..data.len()).step_by(37) {
                let slice = &data[start..end];
                assert_eq!(crc32c(slice), reference(slice), "{start}..{end}");
            }
        }
    }

    /// The textbook reflected bit-at-a-time CRC-32C.
    fn reference(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
