//! Helpers shared by this crate's real-runc integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The installed runc; panics (prerequisite missing) if there is none.
pub fn runc() -> PathBuf {
    for p in [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("PREREQUISITE MISSING: runc is not installed (apt-get install runc)");
}

/// A busybox rootfs at `root`: `proc sys dev tmp etc`, bin/busybox hard-linked from /bin/busybox (copied if on
/// another filesystem, without an `ETXTBSY` race: see `krio_testutil`) and every applet hard-linked to it.
pub fn make_busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = bin.join("busybox");
    krio_testutil::copy_executable(Path::new("/bin/busybox"), &bb);
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            let _ = std::fs::hard_link(&bb, bin.join(applet));
        }
    }
}
