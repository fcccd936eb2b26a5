//! Instance ids, hostnames and device names as clients hand them in (libStorage headers and
//! attach bodies, the admin API, `polly node` reports, CSI node ids): the checks every surface
//! shares, so nothing a host could not have sent is stored, shown or used as a path.

use super::{Error, Result};

/// Longest instance id, hostname or device name, in characters.
pub const MAX_IDENT_BYTES: usize = 256;

/// An instance id: 1 to [`MAX_IDENT_BYTES`] characters, no control characters (NUL included), no
/// `..` path component.
pub fn check_instance_id(id: &str) -> Result<()> {
    check("instance id", id).map_err(Error::InvalidArgument)
}

/// A device name a client proposes for an attachment (`/dev/xvdb`): the instance id's rules.
pub fn check_device_name(device: &str) -> Result<()> {
    check("device name", device).map_err(Error::InvalidArgument)
}

/// A host's name as it reports it: the instance id's rules.
pub fn check_hostname(hostname: &str) -> Result<()> {
    check("hostname", hostname).map_err(Error::InvalidArgument)
}

/// Why `value` is not a good `what`, in one line that does not repeat a huge value.
pub fn check(what: &str, value: &str) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err(format!(
            "{what} is empty; give 1 to {MAX_IDENT_BYTES} characters"
        ));
    }
    // Counted in characters, as the admin API's OpenAPI document (`maxLength`) counts them;
    // at most 1 KiB of UTF-8.
    let chars = value.chars().count();
    if chars > MAX_IDENT_BYTES {
        return Err(format!(
            "{what} is {chars} characters long; at most {MAX_IDENT_BYTES} are allowed"
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} {value:?} contains the control character {c:?}; use printable characters"
        ));
    }
    if value.split('/').any(|part| part == "..") {
        return Err(format!(
            "{what} {value:?} has a \"..\" path component; name the device or host itself"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_idents() {
        for good in [
            "i-0123456789abcdef0",
            "node-1.example.com",
            "/dev/xvdb",
            "/dev/disk/by-id/x",
            "a..b",
            &"x".repeat(MAX_IDENT_BYTES),
        ] {
            assert_eq!(check("device name", good), Ok(()), "{good:?}");
        }
        for (bad, why) in [
            ("", "is empty"),
            ("../../etc", "\"..\" path component"),
            ("/dev/../etc/passwd", "\"..\" path component"),
            ("..", "\"..\" path component"),
            ("a\0b", "control character '\\0'"),
            ("a\nb", "control character '\\n'"),
            ("tab\there", "control character '\\t'"),
            ("a\u{7f}", "control character '\\u{7f}'"),
        ] {
            let e = check("device name", bad).unwrap_err();
            assert!(
                e.starts_with("device name") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
        let huge = "x".repeat(900_000);
        let e = check("instance id", &huge).unwrap_err();
        assert_eq!(
            e,
            "instance id is 900000 characters long; at most 256 are allowed"
        );
    }
}
