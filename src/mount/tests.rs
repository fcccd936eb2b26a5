//! Tests of node-side mounting: the mountinfo parser, EBS and rbd lookups on fake trees, and
//! (as root) real bind, loop and ext4 mounts, every one cleaned up by a guard even when an
//! assertion fails.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::block::{self, Probe};
use super::*;

// ---------------------------------------------------------------------------------------
// mountinfo

const SAMPLE: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
100 28 7:3 / /var/lib/polly/my\\040vol rw,relatime shared:1 master:2 - ext4 /dev/loop3 rw
101 28 0:50 /data\\011tab\\012nl\\134bs /mnt/x rw - tmpfs  rw,size=10k
102 28 0:51 / /mnt/y rw - overlay overlay

";

#[test]
fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
    let entries = parse_mountinfo(SAMPLE).unwrap();
    assert_eq!(entries.len(), 6);

    let root = &entries[1];
    assert_eq!((root.mount_id, root.parent_id), (28, 1));
    assert_eq!((root.major, root.minor), (253, 1));
    assert_eq!(root.mount_point, Path::new("/"));
    assert_eq!(root.root, Path::new("/"));
    assert_eq!(root.fs_type, "ext4");
    assert_eq!(root.source, "/dev/vda1");
    assert_eq!(root.options, "rw,relatime");
    assert_eq!(root.optional, ["shared:1"]);
    assert_eq!(root.super_options, "rw,errors=remount-ro");

    assert_eq!(entries[2].root, Path::new("/mnt1"));
    assert_eq!(entries[2].optional, ["master:1"]);

    let spaced = &entries[3];
    assert_eq!(spaced.mount_point, Path::new("/var/lib/polly/my vol"));
    assert_eq!(spaced.optional, ["shared:1", "master:2"]);
    assert_eq!(spaced.source, "/dev/loop3");

    let odd = &entries[4];
    assert_eq!(odd.root, Path::new("/data\ttab\nnl\\bs"));
    assert_eq!(odd.source, "", "an empty source is an empty field");
    assert_eq!(odd.super_options, "rw,size=10k");
    assert!(odd.optional.is_empty());

    assert_eq!(entries[5].super_options, "", "super options may be missing");
}

#[test]
fn a_malformed_mountinfo_line_is_an_error_naming_it() {
    let text = "28 1 253:1 / / rw shared:1 - ext4 /dev/vda1 rw\n29 28 253:1 / /x rw shared:1 ext4 /dev/vda1 rw\n";
    let err = parse_mountinfo(text).unwrap_err();
    match &err {
        Error::Malformed { line, text, reason } => {
            assert_eq!(*line, 2);
            assert!(text.starts_with("29 28"), "{text}");
            assert!(reason.contains("separator"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(err.to_string().contains("line 2"), "{err}");

    for bad in [
        "short line",
        "x 1 8:1 / / rw - ext4 /dev/sda rw",
        "1 1 8-1 / / rw - ext4 /dev/sda rw",
        "1 1 8:1 / / rw - ext4",
    ] {
        assert!(
            matches!(parse_mountinfo(bad), Err(Error::Malformed { line: 1, .. })),
            "{bad}"
        );
    }
}

#[test]
fn unescape_keeps_what_is_not_an_octal_escape() {
    assert_eq!(mountinfo::unescape(br"a\040b"), b"a b");
    assert_eq!(mountinfo::unescape(br"a\12"), br"a\12");
    assert_eq!(mountinfo::unescape(br"a\999b"), br"a\999b");
    assert_eq!(mountinfo::unescape(br"\134\134"), br"\\");
    assert_eq!(mountinfo::unescape(br"\400"), br"\400", "past a byte");
}

#[test]
fn this_process_mountinfo_has_a_root_and_tells_mount_points() {
    let entries = mountinfo().unwrap();
    assert!(entries.iter().any(|e| e.mount_point == Path::new("/")));
    assert!(is_mounted(Path::new("/proc")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    assert!(!is_mounted(dir.path()).unwrap());
    assert!(!is_mounted(&dir.path().join("missing")).unwrap());
}

// ---------------------------------------------------------------------------------------
// EBS and rbd lookups, blkid output, argument building, validation

/// A fake /dev: a by-id directory of symlinks, and device files.
fn fake_dev() -> tempfile::TempDir {
    let dev = tempfile::tempdir().unwrap();
    let by_id = dev.path().join("disk/by-id");
    fs::create_dir_all(&by_id).unwrap();
    for name in ["nvme1n1", "nvme1n1p1", "nvme2n1", "nvme3n1", "xvdf", "sdg"] {
        File::create(dev.path().join(name)).unwrap();
    }
    for (link, to) in [
        ("nvme-Amazon_Elastic_Block_Store_vol0abc123", "nvme1n1"),
        (
            "nvme-Amazon_Elastic_Block_Store_vol0abc123-part1",
            "nvme1n1p1",
        ),
        ("nvme-Amazon_Elastic_Block_Store_vol0fff", "nvme2n1"),
        ("nvme-Amazon_Elastic_Block_Store_vol0ns_1", "nvme3n1"),
        ("nvme-Amazon_Elastic_Block_Store_vol0gone", "nvme9n1"),
    ] {
        symlink(format!("../../{to}"), by_id.join(link)).unwrap();
    }
    // amazon-ec2-utils style: sdh is the NVMe device of another volume.
    symlink("nvme2n1", dev.path().join("sdh")).unwrap();
    dev
}

#[test]
fn ebs_devices_are_found_by_nvme_serial_then_by_hint() {
    let dev = fake_dev();
    let d = dev.path();
    let real = |name: &str| Some(fs::canonicalize(d.join(name)).unwrap());
    let find = |id: &str, hint: Option<&str>| find_ebs_device_in(d, id, hint).unwrap();

    assert_eq!(find("vol-0abc123", None), real("nvme1n1"));
    assert_eq!(find("vol-0abc123", Some("/dev/xvdz")), real("nvme1n1"));
    assert_eq!(find("vol-0ns", None), real("nvme3n1"), "a namespace suffix");
    assert_eq!(find("vol-0gone", None), None, "a dangling link");
    // By hint, and its xvd ↔ sd twin.
    assert_eq!(find("vol-0999", Some("xvdf")), real("xvdf"));
    assert_eq!(find("vol-0999", Some("/dev/sdf")), real("xvdf"));
    assert_eq!(find("vol-0999", Some("/dev/xvdg")), real("sdg"));
    // The hinted device is another EBS volume's NVMe device.
    assert_eq!(find("vol-0999", Some("/dev/sdh")), None);
    assert_eq!(find("vol-0999", None), None);
    assert_eq!(find("vol-0999", Some("sdq")), None);

    // No by-id directory at all.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        find_ebs_device_in(empty.path(), "vol-0abc123", None).unwrap(),
        None
    );

    for (id, hint) in [("../x", None), ("vol-", None), ("vol-1", Some("../sda"))] {
        assert!(
            matches!(find_ebs_device_in(d, id, hint), Err(Error::Invalid { .. })),
            "{id} {hint:?}"
        );
    }
}

#[test]
fn rbd_arguments_and_existing_mappings() {
    assert_eq!(
        rbd::map_args("rbd", "polly-a-v1", None, None),
        ["map", "rbd/polly-a-v1"]
    );
    assert_eq!(
        rbd::map_args(
            "fast",
            "img",
            Some("polly"),
            Some(Path::new("/etc/ceph/c.conf"))
        ),
        ["map", "fast/img", "--id", "polly", "-c", "/etc/ceph/c.conf"]
    );
    assert!(rbd::validate("rbd", "img", Some("admin")).is_ok());
    for (pool, image, user) in [
        ("-x", "img", None),
        ("rbd", "a/b", None),
        ("rbd", "img@snap", None),
        ("", "img", None),
        ("rbd", "img", Some("--conf")),
        ("rbd", "a b", None),
    ] {
        assert!(
            matches!(rbd::validate(pool, image, user), Err(Error::Invalid { .. })),
            "{pool} {image} {user:?}"
        );
    }

    let sys = tempfile::tempdir().unwrap();
    let mapping = |id: &str, pool: &str, name: &str, snap: &str| {
        let dir = sys.path().join(id);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("pool"), format!("{pool}\n")).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("current_snap"), format!("{snap}\n")).unwrap();
        fs::write(dir.join("pool_ns"), "\n").unwrap();
    };
    mapping("0", "rbd", "other", "-");
    mapping("2", "rbd", "img", "snap1");
    mapping("3", "rbd", "img", "-");
    let s = sys.path();
    assert_eq!(
        rbd::find_mapping_in(s, "rbd", "img").unwrap(),
        Some(PathBuf::from("/dev/rbd3"))
    );
    assert_eq!(rbd::find_mapping_in(s, "fast", "img").unwrap(), None);
    assert_eq!(
        rbd::mapping_of_in(s, Path::new("/dev/rbd0")).unwrap(),
        Some(("rbd".into(), "other".into()))
    );
    assert_eq!(
        rbd::mapping_of_in(s, Path::new("/dev/rbd2")).unwrap(),
        None,
        "a snapshot"
    );
    assert_eq!(rbd::mapping_of_in(s, Path::new("/dev/rbd7")).unwrap(), None);
    assert_eq!(rbd::mapping_of_in(s, Path::new("/dev/sda")).unwrap(), None);
    assert_eq!(
        rbd::find_mapping_in(&s.join("missing"), "rbd", "img").unwrap(),
        None
    );
}

#[test]
fn blkid_output_and_mkfs_arguments() {
    let ext4 = "DEVNAME=/dev/loop0\nUUID=0e2c\nVERSION=1.0\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n";
    assert_eq!(block::parse_probe(ext4), Probe::Filesystem("ext4".into()));
    let gpt = "DEVNAME=/dev/vdb\nPTUUID=5a1\nPTTYPE=gpt\n";
    assert_eq!(
        block::parse_probe(gpt),
        Probe::Other("a gpt partition table".into())
    );
    let dev = Path::new("/dev/loop0");
    assert_eq!(block::mkfs_args("ext4", dev), ["-q", "-F", "/dev/loop0"]);
    assert_eq!(block::mkfs_args("xfs", dev), ["-q", "/dev/loop0"]);
    assert_eq!(block::mkfs_args("vfat", dev), ["/dev/loop0"]);
}

#[test]
fn sources_that_cannot_be_acted_on_are_refused_before_anything_is_done() {
    let target = tempfile::tempdir().unwrap();
    let t = target.path().join("t");
    let bad = [
        Source::Directory {
            path: "relative/dir".into(),
        },
        Source::Image {
            path: "/x.img".into(),
            filesystem: "../../bin/sh".into(),
            device: None,
        },
        Source::Rbd {
            pool: "rbd".into(),
            image: "-o".into(),
            user: None,
            conf: None,
            filesystem: "ext4".into(),
        },
        Source::Ebs {
            volume_id: "vol-1".into(),
            device_hint: Some("../../sda".into()),
            filesystem: "ext4".into(),
        },
    ];
    for source in bad {
        let err = publish(&source, &t).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{source}: {err}");
        assert!(!t.exists(), "{source}: target created");
    }
    let dir = Source::Directory {
        path: target.path().into(),
    };
    assert!(matches!(
        publish(&dir, Path::new("rel/target")),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn sources_and_records_are_tagged_json() {
    let image = Source::Image {
        path: "/srv/polly/loop/v1.img".into(),
        filesystem: "ext4".into(),
        device: Some("/dev/loop3".into()),
    };
    let json = serde_json::to_value(&image).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "image", "path": "/srv/polly/loop/v1.img",
            "filesystem": "ext4", "device": "/dev/loop3"})
    );
    let ebs: Source =
        serde_json::from_str(r#"{"kind": "ebs", "volume_id": "vol-0abc", "filesystem": "xfs"}"#)
            .unwrap();
    assert_eq!(
        ebs,
        Source::Ebs {
            volume_id: "vol-0abc".into(),
            device_hint: None,
            filesystem: "xfs".into()
        }
    );
    let p = Published {
        target: "/var/lib/polly/mnt/v1".into(),
        device: Some("/dev/loop3".into()),
        attached_here: true,
        source: image,
        read_only: false,
    };
    let back: Published = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

// ---------------------------------------------------------------------------------------
// Real mounts (root)

/// Whether this test can run: root. Otherwise it says so loudly, and under CI it fails.
fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (mount, losetup), and CI runs it: run the tests as root"
    );
    eprintln!("*** skipped: {test} needs root (mount, losetup, mkfs.ext4) ***");
    false
}

/// A scratch directory whose mounts and loop devices are all undone when it is dropped,
/// whatever the test did or failed to do.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        Scratch { _dir: dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A sparse image file of 64 MiB, blank or with an `fs` file system.
    fn image(&self, name: &str, fs: Option<&str>) -> PathBuf {
        let path = self.path(name);
        File::create(&path).unwrap().set_len(64 << 20).unwrap();
        if let Some(fs) = fs {
            sh(&format!("mkfs.{fs}"), &["-F", "-q", path.to_str().unwrap()]);
        }
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut points: Vec<PathBuf> = mountinfo()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.mount_point)
            .filter(|p| p.starts_with(&self.root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in points {
            let c = std::ffi::CString::new(p.to_str().unwrap_or_default()).unwrap_or_default();
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        for device in loops_under(&self.root) {
            let _ = Command::new("losetup").arg("-d").arg(&device).status();
        }
    }
}

/// Loop devices whose backing file is under `root`.
fn loops_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") {
            let dev = PathBuf::from(format!("/dev/{name}"));
            if loop_backing_file(&dev)
                .ok()
                .flatten()
                .is_some_and(|b| b.starts_with(root))
            {
                out.push(dev);
            }
        }
    }
    out
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mounts_at(target: &Path) -> usize {
    let target = fs::canonicalize(target).unwrap();
    mountinfo()
        .unwrap()
        .iter()
        .filter(|e| e.mount_point == target)
        .count()
}

/// `find_loop(image)` once the kernel has let go of a detached device (udev may hold it open
/// for a moment).
fn loop_gone(image: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while find_loop(image).unwrap().is_some() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn image_source(path: &Path, device: Option<&Path>) -> Source {
    Source::Image {
        path: path.to_path_buf(),
        filesystem: "ext4".into(),
        device: device.map(Path::to_path_buf),
    }
}

#[test]
fn a_directory_is_bind_mounted_once_and_unpublished_idempotently() {
    if !root("a_directory_is_bind_mounted_once_and_unpublished_idempotently") {
        return;
    }
    let s = Scratch::new();
    let data = s.path("data");
    fs::create_dir(&data).unwrap();
    let target = s.path("mnt/deep/target");
    let source = Source::Directory { path: data.clone() };

    let p = publish(&source, &target).unwrap();
    assert_eq!(p.device, None);
    assert!(!p.attached_here);
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o755
    );
    fs::write(target.join("hello"), "through the target").unwrap();
    assert_eq!(
        fs::read_to_string(data.join("hello")).unwrap(),
        "through the target"
    );

    let again = publish(&source, &target).unwrap();
    assert_eq!(again, p);
    assert_eq!(mounts_at(&target), 1, "publish twice = one mount");

    // Another source on the same target is refused.
    let other = s.path("other");
    fs::create_dir(&other).unwrap();
    let err = publish(&Source::Directory { path: other }, &target).unwrap_err();
    assert!(matches!(err, Error::TargetInUse { .. }), "{err}");

    unpublish(&p).unwrap();
    assert!(!target.exists(), "target removed");
    unpublish(&p).unwrap();
    assert_eq!(
        fs::read_to_string(data.join("hello")).unwrap(),
        "through the target"
    );

    // A missing source is NotFound, and the target made for it is gone again.
    let missing = Source::Directory {
        path: s.path("missing"),
    };
    assert!(matches!(
        publish(&missing, &target),
        Err(Error::NotFound { .. })
    ));
    assert!(!target.exists());
}

#[test]
fn a_busy_target_stays_mounted_until_released() {
    if !root("a_busy_target_stays_mounted_until_released") {
        return;
    }
    let s = Scratch::new();
    let data = s.path("data");
    fs::create_dir(&data).unwrap();
    let target = s.path("target");
    let p = publish(&Source::Directory { path: data }, &target).unwrap();

    let mut open = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(target.join("f"))
        .unwrap();
    let err = unpublish(&p).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert!(is_mounted(&target).unwrap(), "no lazy unmount");
    open.write_all(b"still there").unwrap();
    drop(open);

    unpublish(&p).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!target.exists());
}

#[test]
fn an_image_gets_its_own_loop_device_which_unpublish_detaches() {
    if !root("an_image_gets_its_own_loop_device_which_unpublish_detaches") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("v.img", Some("ext4"));
    let target = s.path("target");
    let source = image_source(&image, None);

    let p = publish(&source, &target).unwrap();
    assert!(p.attached_here);
    let device = p.device.clone().unwrap();
    assert_eq!(find_loop(&image).unwrap(), Some(device.clone()));
    let entry = mountinfo::mount_at(&target).unwrap().unwrap();
    assert_eq!(entry.fs_type, "ext4");
    fs::write(target.join("f"), "on ext4").unwrap();

    assert_eq!(publish(&source, &target).unwrap(), p, "idempotent");
    assert_eq!(mounts_at(&target), 1);

    unpublish(&p).unwrap();
    assert!(!target.exists());
    assert!(loop_gone(&image), "unpublish detaches the loop device");
    unpublish(&p).unwrap();
}

#[test]
fn a_blank_image_is_formatted_once_and_never_again() {
    if !root("a_blank_image_is_formatted_once_and_never_again") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("blank.img", None);
    let target = s.path("target");
    let source = image_source(&image, None);

    let p = publish(&source, &target).unwrap();
    assert_eq!(
        mountinfo::mount_at(&target).unwrap().unwrap().fs_type,
        "ext4"
    );
    fs::write(target.join("kept"), "first publish").unwrap();
    unpublish(&p).unwrap();
    assert!(loop_gone(&image));
    assert_eq!(
        sh(
            "blkid",
            &["-p", "-o", "value", "-s", "TYPE", image.to_str().unwrap()]
        ),
        "ext4"
    );

    let p = publish(&source, &target).unwrap();
    assert_eq!(
        fs::read_to_string(target.join("kept")).unwrap(),
        "first publish"
    );
    unpublish(&p).unwrap();
}

#[test]
fn an_image_holding_another_file_system_is_mounted_as_it() {
    if !root("an_image_holding_another_file_system_is_mounted_as_it") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("ext2.img", Some("ext2"));
    let target = s.path("target");
    let p = publish(&image_source(&image, None), &target).unwrap();
    assert_eq!(
        mountinfo::mount_at(&target).unwrap().unwrap().fs_type,
        "ext2"
    );
    unpublish(&p).unwrap();
    assert_eq!(
        sh(
            "blkid",
            &["-p", "-o", "value", "-s", "TYPE", image.to_str().unwrap()]
        ),
        "ext2"
    );
}

#[test]
fn centrals_loop_device_on_this_host_is_used_and_left_attached() {
    if !root("centrals_loop_device_on_this_host_is_used_and_left_attached") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("v.img", Some("ext4"));
    let central = PathBuf::from(sh("losetup", &["-f", "--show", image.to_str().unwrap()]));
    let target = s.path("target");
    let source = image_source(&image, Some(&central));

    let p = publish(&source, &target).unwrap();
    assert_eq!(p.device.as_deref(), Some(central.as_path()));
    assert!(!p.attached_here);
    assert_eq!(publish(&source, &target).unwrap(), p, "idempotent");

    unpublish(&p).unwrap();
    assert!(!target.exists());
    let backing = loop_backing_file(&central).unwrap().unwrap();
    assert_eq!(backing, image, "central's loop device stays attached");
    sh("losetup", &["-d", central.to_str().unwrap()]);
    assert!(loop_gone(&image));
}

#[test]
fn a_loop_device_already_on_the_image_is_shared_not_doubled() {
    if !root("a_loop_device_already_on_the_image_is_shared_not_doubled") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("v.img", Some("ext4"));
    let source = image_source(&image, None);
    let (t1, t2) = (s.path("t1"), s.path("t2"));

    let p1 = publish(&source, &t1).unwrap();
    let p2 = publish(&source, &t2).unwrap();
    assert_eq!(p1.device, p2.device);
    assert!(p1.attached_here && !p2.attached_here);
    fs::write(t1.join("f"), "one file system").unwrap();
    assert_eq!(fs::read_to_string(t2.join("f")).unwrap(), "one file system");

    // The first unpublish detaches while t2 still uses the device: the kernel keeps it
    // until that mount goes.
    unpublish(&p1).unwrap();
    assert_eq!(fs::read_to_string(t2.join("f")).unwrap(), "one file system");
    unpublish(&p2).unwrap();
    assert!(loop_gone(&image));
}

#[test]
fn a_failed_publish_releases_the_loop_device_it_attached() {
    if !root("a_failed_publish_releases_the_loop_device_it_attached") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("blank.img", None);
    let target = s.path("target");
    let source = Source::Image {
        path: image.clone(),
        filesystem: "nosuchfs".into(),
        device: None,
    };
    let err = publish(&source, &target).unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
    assert!(loop_gone(&image), "loop device released");
    assert!(!target.exists(), "target removed");
}

#[test]
fn unpublish_finishes_what_a_crash_left_halfway() {
    if !root("unpublish_finishes_what_a_crash_left_halfway") {
        return;
    }
    let s = Scratch::new();
    let image = s.image("v.img", Some("ext4"));
    let target = s.path("target");
    let p = publish(&image_source(&image, None), &target).unwrap();
    let device = p.device.clone().unwrap();

    // Crashed after unmounting.
    assert!(syscall::unmount(&target).unwrap());
    unpublish(&p).unwrap();
    assert!(loop_gone(&image));
    assert!(!target.exists());

    // Crashed after detaching; the device number now backs someone else's file.
    let other = s.image("other.img", None);
    let out = Command::new("losetup")
        .arg(&device)
        .arg(&other)
        .output()
        .unwrap();
    if out.status.success() {
        unpublish(&p).unwrap();
        assert_eq!(
            loop_backing_file(&device).unwrap(),
            Some(other.clone()),
            "another file's loop device is left alone"
        );
    } else {
        eprintln!(
            "note: {} was taken before the test could reuse it; that half did not run",
            device.display()
        );
    }
}

#[test]
fn read_only_publishes_refuse_writes_and_never_format() {
    if !root("read_only_publishes_refuse_writes_and_never_format") {
        return;
    }
    let s = Scratch::new();
    let data = s.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("f"), "shared").unwrap();
    let target = s.path("dir-target");
    let p = publish_with(&Source::Directory { path: data.clone() }, &target, true).unwrap();
    assert!(p.read_only);
    assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "shared");
    let err = fs::write(target.join("g"), "no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // The source itself stays writable: only this mount is read-only.
    fs::write(data.join("g"), "yes").unwrap();
    unpublish(&p).unwrap();

    let image = s.image("ro.img", Some("ext4"));
    let target = s.path("img-target");
    let p = publish_with(&image_source(&image, None), &target, true).unwrap();
    let entry = mountinfo::mount_at(&target).unwrap().unwrap();
    assert!(
        entry.options.split(',').any(|o| o == "ro"),
        "{}",
        entry.options
    );
    let err = fs::write(target.join("g"), "no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    unpublish(&p).unwrap();
    assert!(loop_gone(&image));

    // A blank image is not formatted by a read-only publish, and nothing is left attached.
    let blank = s.image("blank.img", None);
    let target = s.path("blank-target");
    let err = publish_with(&image_source(&blank, None), &target, true).unwrap_err();
    assert!(err.to_string().contains("never formatted"), "{err}");
    assert!(loop_gone(&blank));
    assert!(!target.exists());
}
