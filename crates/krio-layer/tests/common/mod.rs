//! Helpers to craft (possibly malicious) layer tars and inspect the result.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

/// Fails loudly unless running as root (the tests chown, mknod and set trusted.* xattrs).
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "krio-layer tests must run as root (they chown, mknod and set trusted.* xattrs)"
    );
}

/// One raw tar member; every field is written as given, without sanitising.
#[derive(Clone, Debug)]
pub struct E {
    pub name: Vec<u8>,
    pub kind: EntryType,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: &str, kind: EntryType, mode: u32) -> Self {
        E {
            name: name.as_bytes().to_vec(),
            kind,
            link: Vec::new(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn file(name: &str, data: &[u8]) -> Self {
        let mut e = Self::new(name, EntryType::Regular, 0o644);
        e.data = data.to_vec();
        e
    }
    pub fn dir(name: &str) -> Self {
        Self::new(name, EntryType::Directory, 0o755)
    }
    pub fn symlink(name: &str, target: &str) -> Self {
        let mut e = Self::new(name, EntryType::Symlink, 0o777);
        e.link = target.as_bytes().to_vec();
        e
    }
    pub fn hardlink(name: &str, target: &str) -> Self {
        let mut e = Self::new(name, EntryType::Link, 0o644);
        e.link = target.as_bytes().to_vec();
        e
    }
    pub fn node(name: &str, kind: EntryType, major: u32, minor: u32) -> Self {
        let mut e = Self::new(name, kind, 0o666);
        e.dev = (major, minor);
        e
    }
    pub fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Self {
        self.mtime = t;
        self
    }
    pub fn pax(mut self, k: &str, v: &[u8]) -> Self {
        self.pax.push((k.to_string(), v.to_vec()));
        self
    }
}

/// Serialises entries into a tar stream. Names/links over 100 bytes go into PAX records.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax: Vec<(String, Vec<u8>)> = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            let n = e.name.len().min(100);
            u.name[..n].copy_from_slice(&e.name[..n]);
            let l = e.link.len().min(100);
            u.linkname[..l].copy_from_slice(&e.link[..l]);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        h.set_device_major(e.dev.0).unwrap();
        h.set_device_minor(e.dev.1).unwrap();
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A sandbox: `<tmp>/target` (empty layer dir) and `<tmp>/outside` (must stay untouched).
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("krio-layer-test-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(tmp.path().join("target")).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/canary"), b"canary").unwrap();
        Sandbox { tmp }
    }
    pub fn target(&self) -> PathBuf {
        self.tmp.path().join("target")
    }
    pub fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    /// Creates and returns another empty directory in the sandbox.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir(&p).unwrap();
        p
    }
    pub fn apply(&self, entries: &[E]) -> Result<krio_layer::ApplyStats, krio_layer::LayerError> {
        krio_layer::apply_layer(tar(entries).as_slice(), &self.target(), &[])
    }
    /// Asserts that the sandbox holds nothing but what it should (no escape).
    pub fn assert_outside_untouched(&self, extra_dirs: &[&str]) {
        let mut names: Vec<String> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = ["outside", "target"]
            .iter()
            .chain(extra_dirs)
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(names, want, "unexpected files in the sandbox parent");
        let out: Vec<_> = std::fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(out, vec![std::ffi::OsString::from("canary")]);
        let md = std::fs::symlink_metadata(self.outside().join("canary")).unwrap();
        assert_eq!(md.nlink(), 1);
        assert_eq!(
            std::fs::read(self.outside().join("canary")).unwrap(),
            b"canary"
        );
    }
}

pub fn lmeta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"))
}

pub fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {p:?} {name}: {e}"),
    }
}

pub fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let m = lmeta(p);
    m.file_type().is_char_device() && m.rdev() == 0
}
