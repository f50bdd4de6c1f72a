//! Behaviour of `apply_layer` on crafted tar streams (run as root).

#![allow(clippy::unwrap_used)] // test helpers and assertions

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use common::*;
use krio_layer::{apply_layer, LayerError};
use tar::EntryType;

#[test]
fn basic_entries_and_metadata() {
    require_root();
    let sb = Sandbox::new();
    let stats = sb
        .apply(&[
            E::dir("etc/").mode(0o751).owner(3, 4).mtime(1_000_000),
            E::file("etc/hosts", b"127.0.0.1 localhost\n")
                .mode(0o640)
                .owner(1000, 1001)
                .mtime(1_234_567),
            E::symlink("etc/link", "../does/not/../matter")
                .owner(7, 8)
                .mtime(1_111),
            E::file("/abs/file", b"x"),
        ])
        .unwrap();
    assert_eq!(stats.entries, 4);
    assert_eq!(stats.bytes, 21);
    let t = sb.target();
    let d = lmeta(&t.join("etc"));
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o751);
    assert_eq!((d.uid(), d.gid()), (3, 4));
    assert_eq!(
        d.mtime(),
        1_000_000,
        "directory mtime applied after its children"
    );
    let f = lmeta(&t.join("etc/hosts"));
    assert_eq!(f.mode() & 0o7777, 0o640);
    assert_eq!((f.uid(), f.gid()), (1000, 1001));
    assert_eq!((f.mtime(), f.atime()), (1_234_567, 1_234_567));
    assert_eq!(
        std::fs::read(t.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    let l = lmeta(&t.join("etc/link"));
    assert!(l.file_type().is_symlink());
    assert_eq!((l.uid(), l.gid(), l.mtime()), (7, 8, 1_111));
    assert_eq!(
        std::fs::read_link(t.join("etc/link")).unwrap(),
        PathBuf::from("../does/not/../matter"),
        "symlink target stored verbatim"
    );
    // Absolute name made relative; implicit parent is 0755 root.
    assert_eq!(std::fs::read(t.join("abs/file")).unwrap(), b"x");
    let a = lmeta(&t.join("abs"));
    assert_eq!((a.mode() & 0o7777, a.uid(), a.gid()), (0o755, 0, 0));
    sb.assert_outside_untouched(&[]);
}

#[test]
fn directory_entry_after_children_is_fixed_up() {
    require_root();
    let sb = Sandbox::new();
    sb.apply(&[
        E::file("a/b/c", b"c"),
        E::dir("a/b").mode(0o700).owner(42, 43).mtime(5_000),
        E::dir("a").mode(0o711).mtime(6_000),
        E::file("a/late", b"late"),
    ])
    .unwrap();
    let t = sb.target();
    let b = lmeta(&t.join("a/b"));
    assert_eq!(
        (b.mode() & 0o7777, b.uid(), b.gid(), b.mtime()),
        (0o700, 42, 43, 5_000)
    );
    let a = lmeta(&t.join("a"));
    assert_eq!((a.mode() & 0o7777, a.mtime()), (0o711, 6_000));
    assert_eq!(std::fs::read(t.join("a/b/c")).unwrap(), b"c");
}

#[test]
fn dotdot_escape_is_refused() {
    require_root();
    for name in ["../evil", "a/../../evil", "/../evil", "./../outside/evil"] {
        let sb = Sandbox::new();
        let err = sb.apply(&[E::file(name, b"evil")]).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidPath { .. }),
            "{name}: {err}"
        );
        sb.assert_outside_untouched(&[]);
    }
    // A `..` that stays inside is fine.
    let sb = Sandbox::new();
    sb.apply(&[E::file("a/../b", b"b")]).unwrap();
    assert_eq!(std::fs::read(sb.target().join("b")).unwrap(), b"b");
}

#[test]
fn writes_through_symlinks_stay_inside() {
    require_root();
    let sb = Sandbox::new();
    let outside = sb.outside();
    let abs = outside.to_str().unwrap().to_string();
    let r = sb.apply(&[
        E::symlink("root", "/"),
        E::symlink("up", "../../../../../../../.."),
        E::symlink("out", &abs),
        E::file("root/evil1", b"1"),
        E::file("up/evil2", b"2"),
        E::dir("up/evildir/"),
        E::symlink("up/evillink", "/"),
        E::file("root/tmp/krio-layer-evil", b"4"),
    ]);
    // root -> / and up -> ../.. resolve to the layer root itself.
    r.unwrap();
    let t = sb.target();
    assert_eq!(std::fs::read(t.join("evil1")).unwrap(), b"1");
    assert_eq!(std::fs::read(t.join("evil2")).unwrap(), b"2");
    assert!(t.join("evildir").is_dir());
    assert!(lmeta(&t.join("evillink")).file_type().is_symlink());
    assert!(!std::path::Path::new("/evil1").exists());
    assert_eq!(std::fs::read(t.join("tmp/krio-layer-evil")).unwrap(), b"4");
    assert!(!std::path::Path::new("/tmp/krio-layer-evil").exists());
    sb.assert_outside_untouched(&[]);

    // Writing through an absolute symlink to an existing host directory never reaches it.
    let sb = Sandbox::new();
    let abs = sb.outside().to_str().unwrap().to_string();
    let r = sb.apply(&[E::symlink("out", &abs), E::file("out/evil", b"x")]);
    assert!(
        r.is_err(),
        "dangling in-root symlink parent must fail, got {r:?}"
    );
    sb.assert_outside_untouched(&[]);
    assert!(!sb.outside().join("evil").exists());

    // Same with a symlink to /etc and a dir entry through it.
    let sb = Sandbox::new();
    let r = sb.apply(&[E::symlink("etc", "/etc"), E::dir("etc/krio-layer-evil/")]);
    assert!(r.is_err());
    assert!(!std::path::Path::new("/etc/krio-layer-evil").exists());
}

#[test]
fn later_entries_replace_symlinks_without_following() {
    require_root();
    let sb = Sandbox::new();
    let abs = sb.outside().to_str().unwrap().to_string();
    let canary = format!("{abs}/canary");
    sb.apply(&[
        E::symlink("f", &canary),
        E::file("f", b"replaced"),
        E::symlink("d", &abs),
        E::dir("d/"),
        E::file("d/x", b"x"),
        E::symlink("m", &canary).mtime(77),
        E::dir("dd/").mtime(100),
    ])
    .unwrap();
    let t = sb.target();
    assert_eq!(std::fs::read(t.join("f")).unwrap(), b"replaced");
    assert!(lmeta(&t.join("d")).is_dir());
    assert_eq!(std::fs::read(t.join("d/x")).unwrap(), b"x");
    // A symlink's metadata is set on the link, never on its (host) target.
    assert_eq!(lmeta(&t.join("m")).mtime(), 77);
    assert_ne!(lmeta(&sb.outside().join("canary")).mtime(), 77);
    sb.assert_outside_untouched(&[]);
}

#[test]
fn hardlinks_confined() {
    require_root();
    let passwd_links = lmeta(std::path::Path::new("/etc/passwd")).nlink();
    for target in ["../../etc/passwd", "a/../../etc/passwd"] {
        let sb = Sandbox::new();
        let err = sb.apply(&[E::hardlink("x", target)]).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidLinkTarget { .. }),
            "{target}: {err}"
        );
    }
    let sb = Sandbox::new();
    let err = sb.apply(&[E::hardlink("x", "/etc/passwd")]).unwrap_err();
    assert!(
        matches!(err, LayerError::LinkTargetNotFound { .. }),
        "{err}"
    );
    let sb = Sandbox::new();
    let err = sb
        .apply(&[E::symlink("l", "/etc"), E::hardlink("x", "l/passwd")])
        .unwrap_err();
    assert!(
        matches!(err, LayerError::LinkTargetNotFound { .. }),
        "{err}"
    );
    let sb = Sandbox::new();
    let abs = format!("{}/canary", sb.outside().to_str().unwrap());
    let err = sb
        .apply(&[E::symlink("c", &abs), E::hardlink("x", "c")])
        .map(|_| ())
        .err();
    // Linking to the symlink itself is allowed (it is a node of this layer); the host
    // file is untouched.
    assert!(err.is_none());
    assert!(lmeta(&sb.target().join("x")).file_type().is_symlink());
    sb.assert_outside_untouched(&[]);
    assert_eq!(
        lmeta(std::path::Path::new("/etc/passwd")).nlink(),
        passwd_links
    );
}

#[test]
fn hardlinks_within_layer() {
    require_root();
    let sb = Sandbox::new();
    sb.apply(&[
        E::file("bin/busybox", b"BB").mode(0o755),
        E::hardlink("bin/sh", "bin/busybox"),
        E::hardlink("/usr/bin/ls", "/bin/busybox"),
        E::hardlink("bin/sh", "bin/busybox"),
        E::hardlink("bin/busybox", "bin/busybox"),
    ])
    .unwrap();
    let t = sb.target();
    let a = lmeta(&t.join("bin/busybox"));
    assert_eq!(a.ino(), lmeta(&t.join("bin/sh")).ino());
    assert_eq!(a.ino(), lmeta(&t.join("usr/bin/ls")).ino());
    assert_eq!(a.nlink(), 3);
    let sb = Sandbox::new();
    let err = sb
        .apply(&[E::dir("d/"), E::hardlink("x", "d")])
        .unwrap_err();
    assert!(matches!(err, LayerError::InvalidLinkTarget { .. }), "{err}");
}

#[test]
fn hardlink_to_lower_layer() {
    require_root();
    let sb = Sandbox::new();
    let l1 = sb.dir("l1");
    let cap = caps_blob();
    apply_layer(
        tar(&[
            E::file("bin/tool", b"TOOL")
                .mode(0o4755)
                .owner(5, 6)
                .mtime(9_999),
            E::file("bin/tool", b"TOOL")
                .mode(0o4755)
                .owner(5, 6)
                .mtime(9_999)
                .pax("SCHILY.xattr.security.capability", &cap)
                .pax("SCHILY.xattr.user.k", b"v"),
            E::file("gone/file", b"G"),
            E::file("opq/file", b"O"),
            E::symlink("sym", "/target/of/sym").mtime(55),
        ])
        .as_slice(),
        &l1,
        &[],
    )
    .unwrap();
    let l2 = sb.dir("l2");
    apply_layer(
        tar(&[
            E::file("gone/.wh.file", b""),
            E::file("opq/.wh..wh..opq", b""),
        ])
        .as_slice(),
        &l2,
        std::slice::from_ref(&l1),
    )
    .unwrap();
    let lowers = vec![l2.clone(), l1.clone()];
    let stats = apply_layer(
        tar(&[
            E::hardlink("bin/tool2", "bin/tool"),
            E::hardlink("bin/tool3", "/bin/tool"),
            E::hardlink("s2", "sym"),
        ])
        .as_slice(),
        &sb.target(),
        &lowers,
    )
    .unwrap();
    assert_eq!(stats.bytes, 4);
    let t = sb.target();
    let m = lmeta(&t.join("bin/tool2"));
    assert_eq!(std::fs::read(t.join("bin/tool2")).unwrap(), b"TOOL");
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o4755, 5, 6, 9_999)
    );
    assert_eq!(
        xattr(&t.join("bin/tool2"), "security.capability").unwrap(),
        cap
    );
    assert_eq!(xattr(&t.join("bin/tool2"), "user.k").unwrap(), b"v");
    assert_eq!(m.ino(), lmeta(&t.join("bin/tool3")).ino());
    assert_ne!(
        m.ino(),
        lmeta(&l1.join("bin/tool")).ino(),
        "lower is copied, not linked"
    );
    assert!(!t.join("bin/tool").exists());
    let s = lmeta(&t.join("s2"));
    assert!(s.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(t.join("s2")).unwrap(),
        PathBuf::from("/target/of/sym")
    );
    assert_eq!(s.mtime(), 55);

    // Whiteout in an upper lower hides the file; so does an opaque directory.
    for link in ["gone/file", "opq/file", "missing"] {
        let sb2 = Sandbox::new();
        let err = apply_layer(
            tar(&[E::hardlink("x", link)]).as_slice(),
            &sb2.target(),
            &lowers,
        )
        .unwrap_err();
        assert!(
            matches!(err, LayerError::LinkTargetNotFound { .. }),
            "{link}: {err}"
        );
    }
    // But seen through only the bottom layer, they exist.
    let sb3 = Sandbox::new();
    apply_layer(
        tar(&[E::hardlink("x", "gone/file"), E::hardlink("y", "opq/file")]).as_slice(),
        &sb3.target(),
        std::slice::from_ref(&l1),
    )
    .unwrap();
    // A whiteout in this layer hides the lower file too.
    let sb4 = Sandbox::new();
    let err = apply_layer(
        tar(&[E::file(".wh.sym", b""), E::hardlink("x", "sym")]).as_slice(),
        &sb4.target(),
        std::slice::from_ref(&l1),
    )
    .unwrap_err();
    assert!(
        matches!(err, LayerError::LinkTargetNotFound { .. }),
        "{err}"
    );
}

#[test]
fn whiteouts_and_opaque_in_both_orders() {
    require_root();
    let sb = Sandbox::new();
    let stats = sb
        .apply(&[
            E::dir("a/"),
            E::file("a/.wh..wh..opq", b""),
            E::file("a/kept1", b"1"),
            E::file("b/kept2", b"2"),
            E::file("b/.wh..wh..opq", b""),
            E::file(".wh.removed", b"").owner(3, 3),
            E::file("c/.wh.sub", b""),
            E::file(".wh..wh..opq", b""),
        ])
        .unwrap();
    assert_eq!(stats.whiteouts, 5);
    let t = sb.target();
    for d in ["a", "b", ""] {
        assert_eq!(
            xattr(&t.join(d), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..]),
            "{d}"
        );
    }
    assert_eq!(xattr(&t.join("c"), "trusted.overlay.opaque"), None);
    assert_eq!(std::fs::read(t.join("a/kept1")).unwrap(), b"1");
    assert_eq!(std::fs::read(t.join("b/kept2")).unwrap(), b"2");
    assert!(is_whiteout(&t.join("removed")));
    assert_eq!(lmeta(&t.join("removed")).uid(), 3);
    assert!(is_whiteout(&t.join("c/sub")));
    assert!(!t.join(".wh.removed").exists());
    assert!(!t.join("a/.wh..wh..opq").exists());

    // A whiteout replaces an earlier entry of this layer, and a later entry replaces it.
    let sb = Sandbox::new();
    sb.apply(&[
        E::file("x/y", b"y"),
        E::file(".wh.x", b""),
        E::file(".wh.z", b""),
        E::file("z", b"z"),
    ])
    .unwrap();
    assert!(is_whiteout(&sb.target().join("x")));
    assert_eq!(std::fs::read(sb.target().join("z")).unwrap(), b"z");

    for bad in [".wh.", "d/.wh..wh.plnk", ".wh..wh.aufs", ".wh..", ".wh..."] {
        let sb = Sandbox::new();
        let err = sb.apply(&[E::file(bad, b"")]).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidWhiteout { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn file_dir_replacement() {
    require_root();
    let sb = Sandbox::new();
    sb.apply(&[
        E::file("x", b"file"),
        E::dir("x/").mode(0o700),
        E::file("x/y", b"y"),
        E::dir("d/"),
        E::file("d/sub/deep/f", b"f"),
        E::symlink("d/sub/l", "/"),
        E::file("d", b"now a file"),
        E::dir("keep/"),
        E::file("keep/child", b"c"),
        E::dir("keep/").mode(0o750),
        E::file("twice", b"first"),
        E::file("twice", b"second").mode(0o600),
    ])
    .unwrap();
    let t = sb.target();
    assert!(lmeta(&t.join("x")).is_dir());
    assert_eq!(std::fs::read(t.join("x/y")).unwrap(), b"y");
    assert_eq!(std::fs::read(t.join("d")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(t.join("keep/child")).unwrap(), b"c");
    assert_eq!(lmeta(&t.join("keep")).mode() & 0o7777, 0o750);
    assert_eq!(std::fs::read(t.join("twice")).unwrap(), b"second");
    assert_eq!(lmeta(&t.join("twice")).mode() & 0o7777, 0o600);
    sb.assert_outside_untouched(&[]);
}

#[test]
fn special_mode_bits_survive_chown() {
    require_root();
    let sb = Sandbox::new();
    sb.apply(&[
        E::file("suid", b"x").mode(0o4755).owner(1000, 1000),
        E::file("sgid", b"x").mode(0o2711).owner(1000, 1000),
        E::dir("sticky/").mode(0o1777).owner(1, 1),
        E::dir("g/").mode(0o2775).owner(0, 50),
        E::file("g/inherit", b"x").owner(7, 8),
        E::file("g/sub/implicit", b"x"),
    ])
    .unwrap();
    let t = sb.target();
    assert_eq!(lmeta(&t.join("suid")).mode() & 0o7777, 0o4755);
    assert_eq!(lmeta(&t.join("sgid")).mode() & 0o7777, 0o2711);
    assert_eq!(lmeta(&t.join("sticky")).mode() & 0o7777, 0o1777);
    assert_eq!(lmeta(&t.join("g")).mode() & 0o7777, 0o2775);
    let i = lmeta(&t.join("g/inherit"));
    assert_eq!(
        (i.uid(), i.gid()),
        (7, 8),
        "explicit owner despite setgid parent"
    );
    let s = lmeta(&t.join("g/sub"));
    assert_eq!(
        (s.uid(), s.gid(), s.mode() & 0o7777),
        (0, 0, 0o755),
        "implicit dir is exact"
    );
}

/// A valid VFS_CAP_REVISION_2 blob granting cap_net_bind_service (effective).
fn caps_blob() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted (low)
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable (low)
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

#[test]
fn xattrs_capability_kept_and_overlay_refused() {
    require_root();
    let sb = Sandbox::new();
    let cap = caps_blob();
    let stats = sb
        .apply(&[
            E::file("ping", b"elf")
                .mode(0o755)
                .owner(0, 0)
                .pax("SCHILY.xattr.security.capability", &cap)
                .pax("SCHILY.xattr.user.comment", b"hello"),
            E::dir("fake/")
                .pax("SCHILY.xattr.trusted.overlay.opaque", b"y")
                .pax("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            E::file("w", b"").pax("SCHILY.xattr.user.overlay.whiteout", b"y"),
            E::symlink("l", "ping").pax("SCHILY.xattr.trusted.k", b"sym"),
            E::node("fifo", EntryType::Fifo, 0, 0).pax("SCHILY.xattr.trusted.k", b"fifo"),
        ])
        .unwrap();
    assert_eq!(stats.skipped_xattrs, 3);
    let t = sb.target();
    assert_eq!(xattr(&t.join("ping"), "security.capability").unwrap(), cap);
    assert_eq!(xattr(&t.join("ping"), "user.comment").unwrap(), b"hello");
    assert_eq!(xattr(&t.join("fake"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&t.join("fake"), "trusted.overlay.redirect"), None);
    assert_eq!(xattr(&t.join("w"), "user.overlay.whiteout"), None);
    assert_eq!(xattr(&t.join("l"), "trusted.k").unwrap(), b"sym");
    assert_eq!(
        xattr(&t.join("ping"), "trusted.k"),
        None,
        "symlink xattr not followed"
    );
    assert_eq!(xattr(&t.join("fifo"), "trusted.k").unwrap(), b"fifo");
}

#[test]
fn device_nodes_and_fifo() {
    require_root();
    let sb = Sandbox::new();
    sb.apply(&[
        E::node("dev/null", EntryType::Char, 1, 3)
            .mode(0o666)
            .owner(0, 5)
            .mtime(123),
        E::node("dev/loop9", EntryType::Block, 7, 9).mode(0o660),
        E::node("run/fifo", EntryType::Fifo, 0, 0)
            .mode(0o620)
            .owner(9, 9)
            .mtime(456),
    ])
    .unwrap();
    let t = sb.target();
    let n = lmeta(&t.join("dev/null"));
    assert!(n.file_type().is_char_device());
    assert_eq!(
        (n.rdev(), n.mode() & 0o7777, n.gid(), n.mtime()),
        (rustix::fs::makedev(1, 3), 0o666, 5, 123)
    );
    let b = lmeta(&t.join("dev/loop9"));
    assert!(b.file_type().is_block_device());
    assert_eq!(
        (b.rdev(), b.mode() & 0o7777),
        (rustix::fs::makedev(7, 9), 0o660)
    );
    let f = lmeta(&t.join("run/fifo"));
    assert!(f.file_type().is_fifo());
    assert_eq!((f.mode() & 0o7777, f.uid(), f.mtime()), (0o620, 9, 456));
}

#[test]
fn long_names_pax_and_gnu() {
    require_root();
    let sb = Sandbox::new();
    let long_dir = format!("{}/{}", "d".repeat(120), "e".repeat(200));
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("/{}", "t".repeat(300));
    sb.apply(&[
        E::file(&long_file, b"pax"),
        E::symlink("s", &long_target),
        E::hardlink("h", &long_file),
    ])
    .unwrap();
    let t = sb.target();
    assert_eq!(std::fs::read(t.join(&long_file)).unwrap(), b"pax");
    assert_eq!(
        std::fs::read_link(t.join("s")).unwrap(),
        PathBuf::from(&long_target)
    );
    assert_eq!(lmeta(&t.join("h")).ino(), lmeta(&t.join(&long_file)).ino());

    // GNU long name / long link records, as written by the tar crate's Builder.
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let gname = format!("{}/{}", "g".repeat(110), "h".repeat(110));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, &gname, &b"gnu"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_mode(0o777);
    h.set_entry_type(EntryType::Symlink);
    b.append_link(&mut h, "gl", "x".repeat(180)).unwrap();
    let data = b.into_inner().unwrap();
    apply_layer(data.as_slice(), &sb.target(), &[]).unwrap();
    assert_eq!(std::fs::read(sb.target().join(&gname)).unwrap(), b"gnu");
    assert_eq!(lmeta(&sb.target().join(&gname)).mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_link(sb.target().join("gl")).unwrap(),
        PathBuf::from("x".repeat(180))
    );
}

#[test]
fn pax_overrides_and_times() {
    require_root();
    let sb = Sandbox::new();
    sb.apply(&[
        E::file("big-ids", b"x")
            .pax("uid", b"3000000")
            .pax("gid", b"4000000"),
        E::file("frac", b"x").pax("mtime", b"1700000000.123456789"),
        E::dir("later/").mtime(1_000),
        E::file("later/child", b"x"),
        E::node("later/fifo", EntryType::Fifo, 0, 0),
    ])
    .unwrap();
    let t = sb.target();
    let m = lmeta(&t.join("big-ids"));
    assert_eq!((m.uid(), m.gid()), (3_000_000, 4_000_000));
    let f = lmeta(&t.join("frac"));
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!((f.atime(), f.atime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!(lmeta(&t.join("later")).mtime(), 1_000);
}

#[test]
fn bad_inputs_error_without_panic() {
    require_root();
    // Target not empty.
    let sb = Sandbox::new();
    std::fs::write(sb.target().join("junk"), b"").unwrap();
    assert!(matches!(
        sb.apply(&[]).unwrap_err(),
        LayerError::TargetNotEmpty { .. }
    ));
    // Missing target.
    let err = apply_layer(&b""[..], std::path::Path::new("/nonexistent/krio"), &[]).unwrap_err();
    assert!(matches!(err, LayerError::Target { .. }));
    // Truncated content.
    let sb = Sandbox::new();
    let mut data = tar(&[E::file("f", &[7u8; 5000])]);
    data.truncate(512 + 1000);
    assert!(apply_layer(data.as_slice(), &sb.target(), &[]).is_err());
    // Garbage header.
    let sb = Sandbox::new();
    let mut data = tar(&[E::file("f", b"x")]);
    data[0..8].copy_from_slice(b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8");
    assert!(apply_layer(data.as_slice(), &sb.target(), &[]).is_err());
    // Empty stream: nothing to do.
    let sb = Sandbox::new();
    assert_eq!(apply_layer(&b""[..], &sb.target(), &[]).unwrap().entries, 0);
    // Root entry as a file, symlink with empty target, unsupported type.
    for e in [
        E::file("./", b""),
        E::symlink("s", ""),
        E::node("v", EntryType::new(b'V'), 0, 0),
    ] {
        let sb = Sandbox::new();
        assert!(sb.apply(std::slice::from_ref(&e)).is_err(), "{e:?}");
    }
    // Root directory entry sets the root's metadata.
    let sb = Sandbox::new();
    sb.apply(&[E::dir("./").mode(0o700).mtime(4_242)]).unwrap();
    let r = lmeta(&sb.target());
    assert_eq!((r.mode() & 0o7777, r.mtime()), (0o700, 4_242));
    // Over-long path.
    let sb = Sandbox::new();
    let err = sb.apply(&[E::file(&"a/".repeat(3000), b"")]).unwrap_err();
    assert!(matches!(err, LayerError::InvalidPath { .. }));
}

#[test]
fn large_file_content() {
    require_root();
    let sb = Sandbox::new();
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let stats = sb.apply(&[E::file("big", &data)]).unwrap();
    assert_eq!(stats.bytes, data.len() as u64);
    assert_eq!(std::fs::read(sb.target().join("big")).unwrap(), data);
    let perm = lmeta(&sb.target().join("big")).permissions();
    assert_eq!(perm.mode() & 0o777, 0o644);
}

#[test]
fn gnu_sparse_file_is_exact_and_sparse() {
    require_root();
    const MIB: u64 = 1024 * 1024;
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..6].copy_from_slice(b"sparse");
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1024);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(0);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(3 * MIB);
        g.sparse[1].set_length(512);
        g.sparse[2].set_offset(5 * MIB);
        g.sparse[2].set_length(0);
        g.set_real_size(5 * MIB);
    }
    h.set_cksum();
    let mut data = vec![b'A'; 512];
    data.extend(vec![b'B'; 512]);
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data.as_slice()).unwrap();
    let stream = b.into_inner().unwrap();
    let sb = Sandbox::new();
    let stats = apply_layer(stream.as_slice(), &sb.target(), &[]).unwrap();
    assert_eq!(stats.bytes, 5 * MIB);
    let got = std::fs::read(sb.target().join("sparse")).unwrap();
    let mut want = vec![0u8; (5 * MIB) as usize];
    want[..512].fill(b'A');
    want[(3 * MIB) as usize..(3 * MIB) as usize + 512].fill(b'B');
    assert!(got == want, "sparse content differs");
    let m = lmeta(&sb.target().join("sparse"));
    assert!(
        m.blocks() * 512 < MIB,
        "file should be sparse, uses {} blocks",
        m.blocks()
    );
}
