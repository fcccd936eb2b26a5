//! Sizes as Docker, REX-Ray and Open Service Broker users write them: `10` (GiB), `512m`,
//! `10GiB`, `1.5GB`, binary units throughout. Shared by `polly node`'s volume plugin and the
//! broker, which both take sizes from people.

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
