//! Recognising a bus on a shared filesystem (NFS, a FUSE client such as
//! GlusterFS, SMB, 9p, cluster filesystems). inotify reports only what
//! happens through this host's kernel, so changes made on another host raise
//! no event here and every wait for them lasts until the next poll. Saying
//! so (with `-v`) explains the latency, points to `--sleep-interval`, and to
//! the settings such a filesystem needs (docs/across-hosts.md).

use std::path::Path;

use crate::sys;

/// `statfs(2)` magic numbers of filesystems that other hosts change behind
/// the kernel's back, with a name to report.
const SHARED: &[(u32, &str)] = &[
    (0x6573_5546, "FUSE (GlusterFS, SSHFS, virtiofs, ...)"),
    (0x0000_6969, "NFS"),
    (0x0000_517b, "SMB"),
    (0xff53_4d42, "CIFS"),
    (0xfe53_4d42, "SMB2"),
    (0x0102_1997, "9p"),
    (0x00c3_6400, "Ceph"),
    (0x5346_414f, "AFS"),
    (0x6b41_4653, "AFS"),
    (0x7375_7245, "Coda"),
    (0x7461_636f, "OCFS2"),
    (0x0116_1970, "GFS2"),
    (0x0bd0_0bd0, "Lustre"),
    (0x2003_0528, "OrangeFS"),
];

/// The kind of shared filesystem that holds `dir`, or of its nearest
/// existing ancestor while `dir` does not exist yet; `None` for a local
/// filesystem or when it cannot be told (on the portable path, which has
/// no events to be misled by anyway).
pub(crate) fn shared_filesystem(dir: &Path) -> Option<&'static str> {
    let magic = dir.ancestors().find_map(sys::filesystem_magic)?;
    SHARED
        .iter()
        .find(|&&(m, _)| m == magic)
        .map(|&(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_filesystems_are_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(shared_filesystem(dir.path()), None);
        assert_eq!(shared_filesystem(&dir.path().join("not/there/yet")), None);
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(shared_filesystem(Path::new("/dev/shm")), None);
        }
    }
}
