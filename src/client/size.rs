//! Byte sizes as the admin API's command-line users write and read them: `10GiB` in,
//! `12 GiB` out. Shared by `polly volume` and `polly marathon`, which both show sizes.

/// Why a size given on the command line was refused.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {input:?}: expected a number with an optional unit like 10GiB")]
    Number {
        input: String,
        source: std::num::ParseFloatError,
    },
    #[error(
        "invalid size {input:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
    )]
    Unit { input: String, unit: String },
    #[error("invalid size {input:?}: out of range")]
    OutOfRange { input: String },
}

/// Parse `10GiB`, `500MB`, `1T`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|source| SizeError::Number {
        input: s.to_string(),
        source,
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => {
            return Err(SizeError::Unit {
                input: s.to_string(),
                unit: u.to_string(),
            })
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(SizeError::OutOfRange {
            input: s.to_string(),
        });
    }
    Ok(bytes as u64)
}

pub use crate::volumes::human_size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("2TB").unwrap(), 2_000_000_000_000);
        for bad in ["", "-1", "0", "10XB", "GiB", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(human_size(10 << 30), "10 GiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12), "12 B");
    }
}
