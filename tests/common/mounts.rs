//! Filesystems made for one test and gone with it: a small tmpfs to fill
//! or make read-only, and a loop-mounted image for a filesystem the machine
//! does not otherwise offer. Both need root; the callers skip (or, under
//! CI, fail) without it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs::is_root;

/// A small tmpfs mounted for the life of the value (root only).
pub struct TinyTmpfs {
    pub dir: PathBuf,
}

impl TinyTmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` understands it) on
    /// `dir`, or says why it cannot.
    pub fn mount(dir: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TinyTmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Remounts it read-only.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A filesystem made by `mkfs` in an image file and loop-mounted for the
/// life of the value (root only), for filesystems the machine does not
/// otherwise offer, such as ext3 with 1-second timestamps.
pub struct LoopFs {
    pub dir: PathBuf,
}

impl LoopFs {
    /// Makes a `size_mib` image `dir.img` with `mkfs -t fstype mkfs_args`
    /// and mounts it on `dir`, or says why it cannot.
    pub fn mount(
        dir: &Path,
        fstype: &str,
        mkfs_args: &[&str],
        size_mib: u64,
    ) -> Result<Self, String> {
        if !is_root() {
            return Err("mounting needs root".into());
        }
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.with_extension("img");
        File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        let run = |cmd: &mut Command| {
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(Command::new("mkfs")
            .args(["-t", fstype, "-q", "-F"])
            .args(mkfs_args)
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-t", fstype, "-o", "loop"])
            .arg(&image)
            .arg(dir))?;
        Ok(LoopFs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The loop device goes with the last unmount (mount -o loop sets
        // autoclear).
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
