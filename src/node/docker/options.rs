//! `docker volume create -o …` options as `polly node` takes them: `size` (Docker-style,
//! a bare number meaning GiB as with REX-Ray), `service`, `pool`, `fs`, `access`,
//! `label.K=V`; `polly.service` and `polly.pool` too, as Mesos' docker/volume isolator
//! passes a Marathon app's `dvdi/polly.service` and `dvdi/polly.pool`. Anything else is
//! refused by name.

use std::collections::BTreeMap;

use crate::driver::AccessMode;
use crate::node::agent::CreateOptions;

/// The options `docker volume create --driver polly -o KEY=VALUE` understands.
pub const KNOWN: &str = "size, service, pool, fs, access, label.<key>";

/// File systems a block volume can be created with.
pub const FILESYSTEMS: &[&str] = &["ext2", "ext3", "ext4"];

pub use crate::volumes::parse_docker_size;

/// Docker's `Opts` map as create options.
pub fn parse(opts: &BTreeMap<String, String>) -> Result<CreateOptions, String> {
    let mut out = CreateOptions::default();
    for (k, v) in opts {
        match k.as_str() {
            "size" => out.size_bytes = Some(parse_docker_size(v)?),
            "service" | "polly.service" if !v.is_empty() => out.service = Some(v.clone()),
            "pool" | "polly.pool" if !v.is_empty() => out.pool = Some(v.clone()),
            "service" | "polly.service" | "pool" | "polly.pool" => {
                return Err(format!("option {k} needs a value: -o {k}=NAME"))
            }
            "fs" if FILESYSTEMS.contains(&v.as_str()) => out.filesystem = Some(v.clone()),
            "access" => {
                out.access_mode = Some(match v.as_str() {
                    "single_writer" => AccessMode::SingleWriter,
                    "multi_reader" => AccessMode::MultiReader,
                    "multi_writer" => AccessMode::MultiWriter,
                    _ => {
                        return Err(format!(
                    "option access={v:?} is not one of single_writer, multi_reader, multi_writer"
                ))
                    }
                })
            }
            "fs" => {
                return Err(format!(
                    "option fs={v:?} is not supported; use one of {FILESYSTEMS:?}"
                ))
            }
            _ => match k.strip_prefix("label.") {
                Some(key) if !key.is_empty() => {
                    out.labels.insert(key.to_string(), v.clone());
                }
                _ => {
                    return Err(format!(
                        "unknown option {k:?} for polly volumes; known options: {KNOWN}"
                    ))
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_and_rexray_users_write_them() {
        const G: u64 = 1 << 30;
        for (s, want) in [
            ("1", G),
            ("10", 10 * G),
            ("1g", G),
            ("1G", G),
            ("1GB", G),
            ("1GiB", G),
            ("512m", 512 << 20),
            ("512MiB", 512 << 20),
            ("1.5g", G + G / 2),
            ("2t", 2 << 40),
            ("4096b", 4096),
        ] {
            assert_eq!(parse_docker_size(s), Ok(want), "{s}");
        }
        for bad in ["", "g", "1x", "-1", "0", "1 GiBs", "ten"] {
            assert!(parse_docker_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_parsed_and_unknown_ones_refused_by_name() {
        let opts: BTreeMap<String, String> = [
            ("size", "2"),
            ("service", "fast"),
            ("fs", "ext4"),
            ("label.team", "db"),
            ("access", "multi_writer"),
            ("polly.pool", "fast"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = parse(&opts).unwrap();
        assert_eq!(o.size_bytes, Some(2 << 30));
        assert_eq!(o.service.as_deref(), Some("fast"));
        assert_eq!(o.filesystem.as_deref(), Some("ext4"));
        assert_eq!(o.labels.get("team").map(String::as_str), Some("db"));
        assert_eq!(o.access_mode, Some(AccessMode::MultiWriter));
        assert_eq!(o.pool.as_deref(), Some("fast"));
        let o = parse(&[("polly.service".to_string(), "vfs".to_string())].into()).unwrap();
        assert_eq!(o.service.as_deref(), Some("vfs"));
        let e = parse(&[("access".to_string(), "shared".to_string())].into()).unwrap_err();
        assert!(e.contains("access=\"shared\""), "{e}");
        let e = parse(&[("sise".to_string(), "1".to_string())].into()).unwrap_err();
        assert!(e.contains("\"sise\"") && e.contains("known options"), "{e}");
        let e = parse(&[("fs".to_string(), "ntfs".to_string())].into()).unwrap_err();
        assert!(e.contains("ntfs"), "{e}");
        let e = parse(&[("label.".to_string(), "x".to_string())].into()).unwrap_err();
        assert!(e.contains("unknown option"), "{e}");
    }
}
