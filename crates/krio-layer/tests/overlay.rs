//! Real overlayfs check: layers unpacked by `apply_layer` are mounted as `lowerdir=` and the
//! merged view must show OCI whiteout / opaque semantics. Needs root and overlayfs; fails
//! loudly if either is missing.

#![allow(clippy::unwrap_used)] // test helpers and assertions

mod common;

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use krio_layer::apply_layer;

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {p:?}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn overlay_mount_honours_whiteouts_and_opaque() {
    require_root();
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap();
    assert!(
        fs.lines().any(|l| l.trim_end().ends_with("overlay")),
        "overlayfs is not available (modprobe overlay)"
    );
    let sb = Sandbox::new();
    let l1 = sb.dir("l1");
    let l2 = sb.dir("l2");
    let l3 = sb.dir("l3");
    let mnt = sb.dir("mnt");

    apply_layer(
        tar(&[
            E::file("etc/a", b"a"),
            E::file("etc/b", b"b1").mode(0o4750).owner(0, 12),
            E::file("opq/old", b"old"),
            E::file("gone", b"gone"),
            E::file("gonedir/x", b"x"),
            E::file("keep", b"keep"),
        ])
        .as_slice(),
        &l1,
        &[],
    )
    .unwrap();
    apply_layer(
        tar(&[
            E::file(".wh.gone", b""),
            E::file(".wh.gonedir", b""),
            E::file("etc/.wh.a", b""),
            E::file("etc/c", b"c"),
            // Opaque marker AFTER a file of the same directory in this layer.
            E::file("opq/new", b"new"),
            E::file("opq/.wh..wh..opq", b""),
            E::file("opq2/.wh..wh..opq", b""),
            E::file("opq2/late", b"late"),
        ])
        .as_slice(),
        &l2,
        std::slice::from_ref(&l1),
    )
    .unwrap();
    apply_layer(
        tar(&[
            E::file("gone", b"back"),
            E::hardlink("etc/bb", "etc/b"),
            E::hardlink("etc/bbb", "etc/b"),
        ])
        .as_slice(),
        &l3,
        &[l2.clone(), l1.clone()],
    )
    .unwrap();

    let opts = CString::new(format!(
        "lowerdir={}:{}:{}",
        l3.display(),
        l2.display(),
        l1.display()
    ))
    .unwrap();
    rustix::mount::mount(
        "overlay",
        &mnt,
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        opts.as_c_str(),
    )
    .unwrap_or_else(|e| panic!("mounting overlay {opts:?} on {mnt:?}: {e}"));
    let _guard = Mount(mnt.clone());

    assert_eq!(names(&mnt), ["etc", "gone", "keep", "opq", "opq2"]);
    assert_eq!(names(&mnt.join("etc")), ["b", "bb", "bbb", "c"]);
    assert_eq!(names(&mnt.join("opq")), ["new"]);
    assert_eq!(names(&mnt.join("opq2")), ["late"]);
    assert_eq!(std::fs::read(mnt.join("gone")).unwrap(), b"back");
    assert_eq!(std::fs::read(mnt.join("etc/bb")).unwrap(), b"b1");
    let bb = std::fs::metadata(mnt.join("etc/bb")).unwrap();
    assert_eq!((bb.mode() & 0o7777, bb.gid()), (0o4750, 12));
    assert_eq!(
        bb.nlink(),
        2,
        "the two links to the lower file share one copy"
    );
    assert_eq!(std::fs::read(mnt.join("keep")).unwrap(), b"keep");
    assert!(!mnt.join("gonedir").exists());
}
