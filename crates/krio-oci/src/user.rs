//! Resolution of the container process user (`process.user` in the OCI runtime spec).
//!
//! Sources, in priority order (CRI `LinuxContainerSecurityContext` comments, containerd behaviour where the CRI is
//! silent):
//! 1. `run_as_user` (numeric uid) or `run_as_username` (name that MUST exist in the image's `/etc/passwd`);
//!    `run_as_group` overrides the primary gid and is only valid together with one of them.
//! 2. the image config `User`: `""`, `uid`, `uid:gid`, `name`, `name:group`, `uid:group`, `name:gid`.
//!
//! The primary gid of a user given only by uid is taken from `/etc/passwd` when the uid has an entry, else 0
//! (containerd `WithUserID`). Supplementary groups: the primary gid first, then (policy `Merge`, the default) every
//! `/etc/group` entry listing the user name as a member, then the CRI `supplemental_groups`; with policy `Strict`
//! only the primary gid and the CRI `supplemental_groups` (CRI `SupplementalGroupsPolicy`).
//!
//! `/etc/passwd` and `/etc/group` are read with `openat2(RESOLVE_IN_ROOT)`, so symlinks (absolute or `..`) can never
//! escape the rootfs.

use std::io::Read;
use std::path::Path;

use krio_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::SpecError;

/// Largest `/etc/passwd` or `/etc/group` we read (bytes); larger files are truncated to this size.
const MAX_DB_FILE: u64 = 4 << 20;

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parsed user/group databases of a rootfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserDb {
    pub passwd: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

/// The resolved `process.user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl UserDb {
    /// Reads `<rootfs>/etc/passwd` and `<rootfs>/etc/group`, confined to `rootfs`. Missing files give empty lists.
    pub(crate) fn load(rootfs: &Path) -> Result<Self, SpecError> {
        let passwd = read_in_root(rootfs, "etc/passwd")?.unwrap_or_default();
        let group = read_in_root(rootfs, "etc/group")?.unwrap_or_default();
        Ok(UserDb {
            passwd: parse_passwd(&passwd),
            groups: parse_group(&group),
        })
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|e| e.name == name)
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|e| e.uid == uid)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|e| e.name == name)
    }
}

/// Reads a regular file inside `rootfs` without ever leaving it. `Ok(None)` when it does not exist.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let err = |source: std::io::Error| SpecError::RootfsRead {
        rootfs: rootfs.to_path_buf(),
        path: rel.to_string(),
        source,
    };
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    let fd = match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| err(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        )));
    }
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_DB_FILE)
        .read_to_end(&mut buf)
        .map_err(err)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Parses `/etc/passwd` content; malformed lines, comments and NIS `+`/`-` lines are skipped.
pub(crate) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
                return None;
            }
            let mut it = line.split(':');
            let name = it.next()?;
            let _pw = it.next()?;
            let uid = it.next()?.trim().parse().ok()?;
            let gid = it.next()?.trim().parse().ok()?;
            if name.is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

/// Parses `/etc/group` content; malformed lines are skipped.
pub(crate) fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
                return None;
            }
            let mut it = line.split(':');
            let name = it.next()?;
            let _pw = it.next()?;
            let gid = it.next()?.trim().parse().ok()?;
            let members = it
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            if name.is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// Validates a user or group name: 1..=256 bytes of `[A-Za-z0-9._-]`, an optional trailing `$`, not starting
/// with `-` (so it can never be mistaken for an option nor smuggle `:` / newlines into passwd lookups).
pub(crate) fn validate_name(field: &str, name: &str) -> Result<(), SpecError> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 256
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("{name:?} is not a valid user or group name"),
        ))
    }
}

/// Converts a CRI int64 id into a uid/gid (`0..=u32::MAX-1`; `u32::MAX` is `(uid_t)-1`, which means "unchanged").
pub(crate) fn id_from_i64(field: &str, v: i64) -> Result<u32, SpecError> {
    u32::try_from(v)
        .ok()
        .filter(|id| *id != u32::MAX)
        .ok_or_else(|| SpecError::invalid(field, format!("{v} is not a valid id")))
}

/// A `user` or `group` part of an image `User` string.
enum IdOrName<'a> {
    Id(u32),
    Name(&'a str),
}

fn parse_id_or_name<'a>(field: &str, s: &'a str) -> Result<IdOrName<'a>, SpecError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let v: i64 = s
            .parse()
            .map_err(|_| SpecError::invalid(field, format!("{s:?} is out of range")))?;
        Ok(IdOrName::Id(id_from_i64(field, v)?))
    } else {
        validate_name(field, s)?;
        Ok(IdOrName::Name(s))
    }
}

/// Resolves the process user from the CRI security context and the image `User` (see the module docs).
pub(crate) fn resolve_user(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: Option<&str>,
    db: &UserDb,
) -> Result<ResolvedUser, SpecError> {
    const F_USER: &str = "linux.security_context.run_as_user";
    const F_USERNAME: &str = "linux.security_context.run_as_username";
    const F_GROUP: &str = "linux.security_context.run_as_group";
    const F_SUPP: &str = "linux.security_context.supplemental_groups";
    const F_IMAGE: &str = "image config User";

    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_username = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|s| !s.is_empty());
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    if run_as_user.is_some() && run_as_username.is_some() {
        return Err(SpecError::invalid(
            F_USERNAME,
            "only one of run_as_user and run_as_username may be set",
        ));
    }
    if run_as_group.is_some() && run_as_user.is_none() && run_as_username.is_none() {
        return Err(SpecError::invalid(
            F_GROUP,
            "run_as_group requires run_as_user or run_as_username",
        ));
    }

    let lookup_name = |field: &str, name: &str| -> Result<(u32, u32), SpecError> {
        validate_name(field, name)?;
        db.user_by_name(name)
            .map(|e| (e.uid, e.gid))
            .ok_or_else(|| SpecError::UnknownName {
                field: field.to_string(),
                kind: "user",
                name: name.to_string(),
                file: "/etc/passwd",
            })
    };
    let gid_for_uid = |uid: u32| db.user_by_uid(uid).map(|e| e.gid).unwrap_or(0);

    let (uid, mut gid) = if let Some(u) = run_as_user {
        let uid = id_from_i64(F_USER, u)?;
        (uid, gid_for_uid(uid))
    } else if let Some(name) = run_as_username {
        lookup_name(F_USERNAME, name)?
    } else {
        let spec = image_user.unwrap_or("").trim();
        if spec.is_empty() {
            (0, gid_for_uid(0))
        } else {
            let (user_part, group_part) = match spec.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (spec, None),
            };
            let (uid, gid) = match parse_id_or_name(F_IMAGE, user_part)? {
                IdOrName::Id(uid) => (uid, gid_for_uid(uid)),
                IdOrName::Name(name) => lookup_name(F_IMAGE, name)?,
            };
            let gid = match group_part {
                None => gid,
                Some(g) => match parse_id_or_name(F_IMAGE, g)? {
                    IdOrName::Id(gid) => gid,
                    IdOrName::Name(name) => {
                        db.group_by_name(name).map(|e| e.gid).ok_or_else(|| {
                            SpecError::UnknownName {
                                field: F_IMAGE.to_string(),
                                kind: "group",
                                name: name.to_string(),
                                file: "/etc/group",
                            }
                        })?
                    }
                },
            };
            (uid, gid)
        }
    };
    if let Some(g) = run_as_group {
        gid = id_from_i64(F_GROUP, g)?;
    }

    let strict = match sc.map(|s| s.supplemental_groups_policy).unwrap_or(0) {
        p if p == SupplementalGroupsPolicy::Merge as i32 => false,
        p if p == SupplementalGroupsPolicy::Strict as i32 => true,
        p => {
            return Err(SpecError::invalid(
                "linux.security_context.supplemental_groups_policy",
                format!("unknown policy {p}"),
            ))
        }
    };
    let mut gids = vec![gid];
    if !strict {
        if let Some(name) = db.user_by_uid(uid).map(|e| e.name.as_str()) {
            for g in &db.groups {
                if g.members.iter().any(|m| m == name) {
                    gids.push(g.gid);
                }
            }
        }
    }
    for (i, g) in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        gids.push(id_from_i64(&format!("{F_SUPP}[{i}]"), *g)?);
    }
    let mut seen = std::collections::HashSet::new();
    gids.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::Int64Value;

    fn db() -> UserDb {
        UserDb {
            passwd: parse_passwd(
                "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\nnobody:x:65534:65534::/:/bin/false\n\
                 app:x:1000:1001::/home/app:/bin/sh\n",
            ),
            groups: parse_group(
                "root:x:0:\nwheel:x:10:app,root\nstaff:x:50: app \napp:x:1001:\nnogroup:x:65534:\n",
            ),
        }
    }

    fn sc(
        user: Option<i64>,
        name: &str,
        group: Option<i64>,
        supp: &[i64],
    ) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            run_as_user: user.map(|value| Int64Value { value }),
            run_as_username: name.to_string(),
            run_as_group: group.map(|value| Int64Value { value }),
            supplemental_groups: supp.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_databases() {
        let d = db();
        assert_eq!(d.passwd.len(), 3);
        assert_eq!(d.groups[1].members, vec!["app", "root"]);
        assert_eq!(d.groups[2].members, vec!["app"]);
    }

    #[test]
    fn image_user_table() {
        let d = db();
        let cases: &[(&str, u32, u32, &[u32])] = &[
            ("", 0, 0, &[0, 10]),
            ("0", 0, 0, &[0, 10]),
            ("1000", 1000, 1001, &[1001, 10, 50]),
            ("app", 1000, 1001, &[1001, 10, 50]),
            ("app:staff", 1000, 50, &[50, 10]),
            ("app:7", 1000, 7, &[7, 10, 50]),
            ("4242", 4242, 0, &[0]),
            ("4242:4243", 4242, 4243, &[4243]),
            ("nobody", 65534, 65534, &[65534]),
        ];
        for (spec, uid, gid, gids) in cases {
            let r = resolve_user(None, Some(spec), &d).unwrap();
            assert_eq!(
                (r.uid, r.gid, r.additional_gids.as_slice()),
                (*uid, *gid, *gids),
                "image user {spec:?}"
            );
        }
    }

    #[test]
    fn image_user_errors() {
        let d = db();
        for spec in [
            "ghost",
            "app:ghosts",
            "a b",
            "-rf",
            "app:x:y",
            "4294967295",
            "99999999999",
        ] {
            assert!(
                resolve_user(None, Some(spec), &d).is_err(),
                "{spec:?} must fail"
            );
        }
    }

    #[test]
    fn cri_user_table() {
        let d = db();
        let r = resolve_user(Some(&sc(Some(1000), "", None, &[])), Some("nobody"), &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        let r = resolve_user(Some(&sc(Some(1000), "", Some(5), &[77])), None, &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 5));
        assert_eq!(r.additional_gids, vec![5, 10, 50, 77]);
        let r = resolve_user(Some(&sc(None, "app", None, &[])), None, &d).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        let r = resolve_user(Some(&sc(Some(31337), "", None, &[])), None, &d).unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (31337, 0, vec![0]));
        let mut strict = sc(Some(1000), "", None, &[77, 77]);
        strict.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let r = resolve_user(Some(&strict), None, &d).unwrap();
        assert_eq!(r.additional_gids, vec![1001, 77]);
    }

    #[test]
    fn cri_user_errors() {
        let d = db();
        for (c, field) in [
            (sc(Some(1), "app", None, &[]), "run_as_username"),
            (sc(None, "", Some(1), &[]), "run_as_group"),
            (sc(Some(-1), "", None, &[]), "run_as_user"),
            (sc(None, "ghost", None, &[]), "run_as_username"),
            (sc(None, "bad:name", None, &[]), "run_as_username"),
            (sc(Some(1), "", None, &[-5]), "supplemental_groups[0]"),
        ] {
            let e = resolve_user(Some(&c), None, &d).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
    }

    #[test]
    fn confined_read_does_not_escape() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        // Absolute symlink pointing at the host file: resolved inside the root, so it is missing.
        std::os::unix::fs::symlink(
            outside.path().join("passwd"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        // `..` escapes are clamped at the root as well.
        std::os::unix::fs::symlink(
            "../../../../../../etc/hostname",
            root.path().join("etc/group"),
        )
        .unwrap();
        let d = UserDb::load(root.path()).unwrap();
        assert!(d.passwd.is_empty());
        assert!(d.groups.is_empty());
    }
}
