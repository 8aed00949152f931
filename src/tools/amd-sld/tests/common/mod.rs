//! A fake sysfs tree in a temporary directory, for `--sysfs-root`.
//!
//! Shared by the binary's unit tests (mounted with `#[path]`) and the integration tests;
//! each uses a different subset, hence `dead_code`, and in the binary nothing is reachable
//! from outside, hence `unreachable_pub`.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every counter file of the ABI, as a freshly loaded module shows them.
pub const COUNTER_FILES: [&str; 7] = [
    "bus_locks",
    "warned",
    "killed",
    "throttled",
    "throttled_ms",
    "guest_bus_locks",
    "dropped",
];

/// A directory that looks like `/` to amd-sld, removed when dropped.
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// A tree without the module.
    pub fn empty() -> FakeSysfs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "amd-sld-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sys/kernel")).unwrap();
        FakeSysfs { root }
    }

    /// A tree with the current module loaded: policy warn, source auto resolved to bld,
    /// CPUs 0-3 armed, every counter 0, no records.
    pub fn loaded() -> FakeSysfs {
        let fake = FakeSysfs::empty();
        fake.write("sys/module/amd_sld/parameters/split_lock_detect", "warn\n");
        fake.write("sys/module/amd_sld/parameters/source", "auto\n");
        for name in COUNTER_FILES {
            fake.write(&format!("sys/kernel/amd_sld/{name}"), "0\n");
        }
        fake.write("sys/kernel/amd_sld/armed_cpus", "0-3\n");
        fake.write("sys/kernel/amd_sld/source", "bld\n");
        fake.write("sys/kernel/amd_sld/events", "");
        fake.write("sys/kernel/amd_sld/top", "");
        fake
    }

    /// The directory to pass as `--sysfs-root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `contents` to `relative` (no leading '/'), creating its directories. The file
    /// is replaced by a rename, so that a concurrent reader (`events -f`) sees the old or
    /// the new contents, as it would from sysfs, never half of one.
    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.root.join(relative);
        let directory = path.parent().unwrap();
        fs::create_dir_all(directory).unwrap();
        let temporary = directory.join(".fake-sysfs.tmp");
        fs::write(&temporary, contents).unwrap();
        fs::rename(temporary, path).unwrap();
    }

    /// Reads `relative`.
    pub fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.root.join(relative)).unwrap()
    }

    /// Removes the file or directory `relative`.
    pub fn remove(&self, relative: &str) {
        let path = self.root.join(relative);
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }

    /// Sets a counter of /sys/kernel/amd_sld.
    pub fn set_counter(&self, name: &str, value: u64) {
        self.write(&format!("sys/kernel/amd_sld/{name}"), &format!("{value}\n"));
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
