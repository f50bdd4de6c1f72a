//! Integration tests of namespace pinning (root, real nsenter / ip / busybox).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use krio_net::ns::{is_namespace_pin, pin_namespaces, unpin_namespaces, NsKind};
use krio_net::NetError;

const TOOLS: &[&str] = &["/usr/bin/nsenter", "/usr/sbin/ip", "/bin/busybox"];

#[test]
fn pin_configure_and_unpin() {
    require(TOOLS);
    let tmp = tempdir();
    let dir = tmp.path().join("pod/ns");
    let own_net = ns_inode(Path::new("/proc/self/ns/net"));
    let own_uts = ns_inode(Path::new("/proc/self/ns/uts"));

    let pins = pin_namespaces(
        &dir,
        &[NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Net],
        Some("pod-host-1"),
    )
    .expect("pin namespaces");
    let net = pins.net.clone().expect("net pin");
    let ipc = pins.ipc.clone().expect("ipc pin");
    let uts = pins.uts.clone().expect("uts pin");
    assert_eq!(net, dir.join("net"));
    assert_eq!(pins.path(NsKind::Uts), Some(uts.as_path()));
    for p in [&net, &ipc, &uts] {
        assert!(is_namespace_pin(p), "{} is not an nsfs mount", p.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // New namespaces, and this process (every thread) is untouched.
    assert_ne!(ns_inode(&net), own_net);
    assert_ne!(ns_inode(&uts), own_uts);
    assert_eq!(ns_inode(Path::new("/proc/self/ns/net")), own_net);
    assert_eq!(ns_inode(Path::new("/proc/thread-self/ns/net")), own_net);

    let (ok, out) = nsenter("uts", &uts, &["/bin/busybox", "hostname"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "pod-host-1");

    let (ok, out) = nsenter("net", &net, &["/usr/sbin/ip", "-o", "link", "show"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 1, "only lo expected: {out}");
    assert!(
        out.contains("lo:") && out.contains("UP"),
        "lo must be up: {out}"
    );
    let (ok, out) = nsenter(
        "net",
        &net,
        &["/bin/busybox", "ping", "-c1", "-W2", "127.0.0.1"],
    );
    assert!(ok, "ping on lo: {out}");

    // The pin dir is a shared mount (propagates unmounts into copies of the mount namespace).
    let mounts = mounts_under(&dir);
    assert_eq!(mounts.len(), 4, "{mounts:#?}");
    let dir_line = mounts
        .iter()
        .find(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
        .expect("dir is a mount point");
    assert!(dir_line.contains("shared:"), "{dir_line}");

    // A second pin into the same dir is refused and leaves the first intact.
    match pin_namespaces(&dir, &[NsKind::Net], None) {
        Err(NetError::PinExists { path }) => assert_eq!(path, net),
        other => panic!("expected PinExists, got {other:?}"),
    }
    assert!(is_namespace_pin(&net));

    unpin_namespaces(&dir).expect("unpin");
    assert!(!dir.exists());
    assert!(
        mounts_under(tmp.path()).is_empty(),
        "{:#?}",
        mounts_under(tmp.path())
    );
    unpin_namespaces(&dir).expect("unpin is idempotent");
}

#[test]
fn failure_is_undone() {
    require(TOOLS);
    let tmp = tempdir();
    let dir = tmp.path().join("ns");
    std::fs::create_dir(&dir).unwrap();
    // A stale plain file where the uts pin goes: net is pinned first, then uts fails.
    std::fs::write(dir.join("uts"), "").unwrap();
    match pin_namespaces(&dir, &[NsKind::Uts, NsKind::Net], Some("h")) {
        Err(NetError::PinExists { path }) => assert_eq!(path, dir.join("uts")),
        other => panic!("expected PinExists, got {other:?}"),
    }
    assert!(
        !dir.join("net").exists(),
        "net pin must be removed on failure"
    );
    assert!(
        dir.join("uts").exists(),
        "pre-existing file must be left alone"
    );
    assert!(
        mounts_under(tmp.path()).is_empty(),
        "{:#?}",
        mounts_under(tmp.path())
    );

    // unpin cleans up leftovers that are not mounts.
    unpin_namespaces(&dir).expect("unpin");
    assert!(!dir.exists());

    // Bad hostname is rejected before anything is created.
    let dir2 = tmp.path().join("ns2");
    match pin_namespaces(&dir2, &[NsKind::Uts], Some("bad host")) {
        Err(NetError::InvalidArgument {
            field: "hostname", ..
        }) => {}
        other => panic!("expected InvalidArgument(hostname), got {other:?}"),
    }
    assert!(!dir2.exists());
}

#[test]
fn empty_kinds_and_hostname_without_uts() {
    require(TOOLS);
    let tmp = tempdir();
    let dir = tmp.path().join("ns");
    let pins = pin_namespaces(&dir, &[], Some("ignored")).expect("pin nothing");
    assert_eq!(pins, Default::default());
    assert!(dir.is_dir());
    unpin_namespaces(&dir).expect("unpin");
    assert!(!dir.exists());
    assert!(mounts_under(tmp.path()).is_empty());
}
