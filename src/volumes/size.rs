//! Sizes as Docker, REX-Ray and Open Service Broker users write them: `10` (GiB), `512m`,
//! `10GiB`, `1.5GB`, binary units throughout. Shared by `polly node`'s volume plugin and the
//! broker, which both take sizes from people. And a byte count in JSON ([`whole_bytes`]).

use serde::Deserialize;

/// A byte count in JSON: a non-negative integer, written `5` or `5.0` (the same JSON
/// number). A fraction, a negative number or a float beyond 2^53 (where floats skip
/// integers) is refused, naming the value.
pub fn whole_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match Num::deserialize(d) {
        Ok(Num::Int(n)) => Ok(n),
        Ok(Num::Float(f)) if f.fract() == 0.0 && (0.0..=EXACT).contains(&f) => Ok(f as u64),
        Ok(Num::Float(f)) => Err(serde::de::Error::custom(format!(
            "size {f} is not a whole number of bytes between 0 and 2^53"
        ))),
        Err(_) => Err(serde::de::Error::custom(
            "size must be a whole number of bytes (a JSON integer)",
        )),
    }
}

/// A size as Docker writes them: `1` (GiB, as REX-Ray reads a bare number), `512m`, `1g`,
/// `10GiB`, `1.5GB`, `100MB`. Units are binary, as Docker's own size parser reads them.
pub fn parse_docker_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!("invalid size {s:?}: write a number of GiB (size=10) or a number with a unit (size=512MiB, size=10g)")
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: u64 = match unit {
        "" if t.len() == num.len() => 1 << 30,
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(bytes as u64)
}

/// `12884901888` → `12 GiB`.
pub fn human_size(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct S {
        #[serde(deserialize_with = "super::whole_bytes")]
        n: u64,
    }

    fn n(json: &str) -> Result<u64, String> {
        serde_json::from_str::<S>(&format!(r#"{{"n":{json}}}"#))
            .map(|s| s.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_bytes_takes_integers_written_either_way() {
        assert_eq!(n("1073741824"), Ok(1 << 30));
        assert_eq!(n("1073741824.0"), Ok(1 << 30));
        assert_eq!(n("1e3"), Ok(1000));
        assert_eq!(n(&u64::MAX.to_string()), Ok(u64::MAX));
        for bad in [
            "1.5",
            "-1",
            "-1.0",
            "1e300",
            "\"5\"",
            "184467440737095516150",
        ] {
            let e = n(bad).unwrap_err();
            assert!(e.contains("whole number of bytes"), "{bad}: {e}");
        }
        assert!(n("1.5").unwrap_err().contains("1.5"));
    }
}
