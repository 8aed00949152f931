//! The cgroup v2 of each record, by path.
//!
//! The module records the ID of the task's cgroup on the default hierarchy (it runs in
//! #DB and NMI context, where the kernel cannot make a path). That ID is the kernfs node
//! ID of the cgroup, which is the inode number of its directory in a cgroup2 mount: a
//! scan of the mount maps IDs back to paths, as `/` plus the directory's path under it
//! (`/system.slice/nginx.service`). A cgroup removed since, or one outside this tool's
//! cgroup namespace, has no path here and shows as `cgroup-id:N`; ID 0 (a module or
//! kernel that does not record cgroups) as `unknown`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sysfs::Sysfs;

/// Where cgroup2 is mounted on a unified host: scanned only where there is no
/// `/proc/self/mounts` to say where it is (a fake tree under `--sysfs-root`).
const DEFAULT_MOUNT: &str = "sys/fs/cgroup";

/// Directory levels scanned below the mount: deeper cgroups show by ID.
const MAX_DEPTH: usize = 32;

/// The label of a record without a cgroup.
pub(crate) const UNKNOWN: &str = "unknown";

/// Cgroup v2 IDs and their paths, as scanned once.
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    paths: HashMap<u64, String>,
}

impl Cgroups {
    /// Scans the cgroup2 mount under the tool's root (`--sysfs-root`): the first `cgroup2`
    /// line of `/proc/self/mounts`, or `sys/fs/cgroup` where there is no such file. Where
    /// cgroup2 is not mounted (only the mount's inodes are cgroup IDs: another file
    /// system's could collide) or cannot be read, the map is empty: records show by ID.
    pub(crate) fn scan(sysfs: &Sysfs) -> Cgroups {
        let root = sysfs.root();
        let mount = match fs::read_to_string(root.join("proc/self/mounts")) {
            Ok(mounts) => mount_point(root, &mounts),
            Err(_) => Some(root.join(DEFAULT_MOUNT)),
        };
        let mut cgroups = Cgroups::default();
        if let Some(mount) = mount {
            if let Ok(meta) = fs::metadata(&mount) {
                cgroups.paths.insert(meta.ino(), "/".to_owned());
                cgroups.walk(&mount, "", 0);
            }
        }
        cgroups
    }

    /// A map given by hand (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(u64, &str)]) -> Cgroups {
        Cgroups {
            paths: pairs.iter().map(|&(id, p)| (id, p.to_owned())).collect(),
        }
    }

    fn walk(&mut self, dir: &Path, prefix: &str, depth: usize) {
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            // Not followed: a cgroup2 mount has no symlinks, a fake tree must not loop.
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let path = format!("{prefix}/{}", entry.file_name().to_string_lossy());
            self.paths.insert(meta.ino(), path.clone());
            self.walk(&entry.path(), &path, depth + 1);
        }
    }

    /// The path of cgroup `id`, if known.
    pub(crate) fn path(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    /// How cgroup `id` is shown: its path, `cgroup-id:N` or `unknown`. The path is escaped
    /// (see [`shown`]): whoever may create a cgroup (a delegated subtree, a rootless
    /// container) chooses its name, and must not be able to write to root's terminal.
    pub(crate) fn name(&self, id: u64) -> String {
        match (id, self.path(id)) {
            (0, _) => UNKNOWN.to_owned(),
            (_, Some(path)) => shown(path),
            (_, None) => format!("cgroup-id:{id}"),
        }
    }

    /// Adds what a new scan finds to what is known: a cgroup removed since keeps its path
    /// (kernfs IDs are not reused on 64-bit kernels), so older records still name it.
    pub(crate) fn merge(&mut self, newer: Cgroups) {
        self.paths.extend(newer.paths);
    }

    /// Whether cgroup `id` is `prefix` or below it, path component by component
    /// (`/a` matches `/a` and `/a/b`, not `/ab`). Cgroups without a path never match.
    pub(crate) fn is_under(&self, id: u64, prefix: &str) -> bool {
        let Some(path) = self.path(id).filter(|_| id != 0) else {
            return false;
        };
        is_under(path, prefix)
    }
}

/// `path` with control characters (C0, DEL, C1) and backslashes as `\xNN`, byte by byte,
/// as the kernel escapes a task's comm: the kernel refuses only a newline in a cgroup's name.
fn shown(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_control() || c == '\\' {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `path` is `prefix` or below it, by components.
fn is_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The first cgroup2 mount point of `mounts` (`/proc/self/mounts`), under `root`.
fn mount_point(root: &Path, mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let (_, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
        // Mount points escape space, tab, newline and backslash as octal (\040).
        (kind == "cgroup2").then(|| root.join(unescape(mount).trim_start_matches('/')))
    })
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    #[test]
    fn prefixes_match_whole_components() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a/"));
        assert!(is_under("/a", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
        assert!(!is_under("/a", "/a/b"));
    }

    #[test]
    fn names_cannot_reach_the_terminal_raw() {
        let cgroups = Cgroups::from_pairs(&[(9, "/evil\x1b[2J\r/a\\b\u{9b}31m")]);
        assert_eq!(cgroups.name(9), "/evil\\x1b[2J\\x0d/a\\x5cb\\xc2\\x9b31m");
        assert!(cgroups.is_under(9, "/evil\x1b[2J\r"));
    }

    #[test]
    fn a_merge_keeps_removed_cgroups() {
        let mut cgroups = Cgroups::from_pairs(&[(7, "/gone")]);
        cgroups.merge(Cgroups::from_pairs(&[(8, "/new")]));
        assert_eq!(cgroups.name(7), "/gone");
        assert_eq!(cgroups.name(8), "/new");
    }

    #[test]
    fn names_and_filters() {
        let cgroups = Cgroups::from_pairs(&[(1, "/"), (7, "/jobs/batch")]);
        assert_eq!(cgroups.name(7), "/jobs/batch");
        assert_eq!(cgroups.name(8), "cgroup-id:8");
        assert_eq!(cgroups.name(0), "unknown");
        assert!(cgroups.is_under(7, "/jobs"));
        assert!(!cgroups.is_under(8, "/"));
        assert!(!cgroups.is_under(0, "/"));
    }

    #[test]
    fn a_scan_maps_directory_inodes_to_paths() {
        let fake = FakeSysfs::loaded();
        fake.write("sys/fs/cgroup/jobs/batch/cgroup.procs", "");
        let cgroups = Cgroups::scan(&Sysfs::new(fake.root()));
        let ino = |p: &str| fs::metadata(fake.root().join(p)).unwrap().ino();
        assert_eq!(cgroups.name(ino("sys/fs/cgroup")), "/");
        assert_eq!(cgroups.name(ino("sys/fs/cgroup/jobs/batch")), "/jobs/batch");
        // A cgroup2 mount elsewhere, as /proc/self/mounts names it.
        fake.write("proc/self/mounts", "cgroup2 /cg\\040v2 cgroup2 rw 0 0\n");
        fake.write("cg v2/x/cgroup.procs", "");
        let cgroups = Cgroups::scan(&Sysfs::new(fake.root()));
        assert_eq!(cgroups.name(ino("cg v2/x")), "/x");
        // No cgroup2 mounted: nothing is scanned, not even sys/fs/cgroup.
        fake.write("proc/self/mounts", "sysfs /sys sysfs rw 0 0\n");
        let cgroups = Cgroups::scan(&Sysfs::new(fake.root()));
        assert_eq!(cgroups.path(ino("sys/fs/cgroup")), None);
    }
}
