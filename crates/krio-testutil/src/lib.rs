//! Helpers shared by krio's tests. A dev-dependency only: nothing krio ships links it.
//!
//! * [`write_executable`] and [`copy_executable`] make fake runtimes, CNI plugins and wrapper
//!   scripts that can be exec'd at once, even while other test threads fork.
//! * [`poll`] and [`poll_blocking`] wait for a condition with a deadline instead of sleeping a
//!   fixed time, and name what they waited for when it never came.
//! * [`Rng`] and [`iters`] drive the seeded fuzz and property tests.
//!
//! # Why executables need care (`ETXTBSY`)
//! Linux refuses to `execve` a file that any process holds open for writing ("Text file
//! busy"). A test that writes a script with `std::fs::write` holds a write descriptor for a
//! moment; if another test thread forks in that moment, the child inherits the descriptor and
//! keeps it until its own `exec` closes it (`O_CLOEXEC`). An exec of the script in that window
//! fails, at random. Closing, `fsync` or renaming in the test process does not help: the inode is
//! the same one the child holds. So the file is written by a short-lived single-threaded child
//! (`/bin/sh`), which exits before the helper returns: the test process never has a descriptor
//! to the file that a fork could copy.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod rng;
pub use rng::{iters, Rng};

/// How often [`poll`] and [`poll_blocking`] evaluate their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A temporary name beside `path`, unique in this process: `.<name>.tmp-<pid>-<n>`.
fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .unwrap_or_else(|| panic!("{} has no file name", path.display()))
        .to_string_lossy();
    path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Makes `tmp` mode 0755 and renames it to `path` (a fresh inode: replacing a script that was
/// run before is safe too). Neither step opens the file.
fn install(tmp: &Path, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", tmp.display()));
    std::fs::rename(tmp, path)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

/// Writes `contents` to `path` as an executable (mode 0755), so that no process holds a write
/// descriptor to it once this returns: `path` can be exec'd at once, whatever other threads of
/// the test process fork meanwhile (see the crate docs). Replaces `path` atomically if it exists.
///
/// Panics (this is test code) when `/bin/sh` cannot be run or the file cannot be written.
pub fn write_executable(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = temp_beside(path);
    let mut child = Command::new("/bin/sh")
        .args(["-c", "exec cat >\"$1\"", "sh"])
        .arg(&tmp)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning /bin/sh to write {}: {e}", path.display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(contents.as_ref());
    drop(stdin);
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for the writer of {}: {e}", path.display()));
    written.unwrap_or_else(|e| panic!("piping {} to its writer: {e}", path.display()));
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
    install(&tmp, path);
}

/// Makes `dst` an executable copy of `src`: a hard link when both are on one filesystem, else a
/// copy written by `cp` in a child process, with the same guarantee as [`write_executable`].
///
/// Panics when neither works.
pub fn copy_executable(src: &Path, dst: &Path) {
    if std::fs::hard_link(src, dst).is_ok() {
        return;
    }
    let tmp = temp_beside(dst);
    let status = Command::new("cp")
        .arg("--")
        .arg(src)
        .arg(&tmp)
        .status()
        .unwrap_or_else(|e| panic!("spawning cp for {}: {e}", dst.display()));
    assert!(
        status.success(),
        "cp {} {} failed: {status}",
        src.display(),
        tmp.display()
    );
    install(&tmp, dst);
}

/// Evaluates `check` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value.
///
/// Panics, naming `what` and the time waited, when `timeout` passes first.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match try_poll(timeout, check).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Like [`poll`], but returns `None` when `timeout` passes (the caller words the failure).
pub async fn try_poll<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`poll`] for synchronous tests: blocks the calling thread between checks.
///
/// Panics, naming `what`, when `timeout` passes first.
pub fn poll_blocking<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_scripts_run_at_once_while_other_threads_fork() {
        let dir = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Threads that fork all the time, as other tests of a binary do.
        let forkers: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = Command::new("/bin/true").status();
                    }
                })
            })
            .collect();
        for i in 0..100 {
            let p = dir.path().join("script");
            write_executable(&p, format!("#!/bin/sh\necho {i}\n"));
            let out = Command::new(&p).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
        }
        stop.store(true, Ordering::Relaxed);
        for f in forkers {
            f.join().unwrap();
        }
        // Nothing but the script is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["script"]);
    }

    #[test]
    fn copies_are_executable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("true");
        copy_executable(Path::new("/bin/true"), &p);
        assert!(Command::new(&p).status().unwrap().success());
    }

    #[tokio::test]
    async fn poll_returns_the_value_and_names_what_timed_out() {
        let mut n = 0;
        let v = poll("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            std::future::ready((n >= 3).then_some(n))
        })
        .await;
        assert_eq!(v, 3);
        let r = tokio::spawn(poll("godot", Duration::from_millis(50), || {
            std::future::ready(None::<()>)
        }))
        .await
        .unwrap_err()
        .into_panic();
        let msg = r.downcast_ref::<String>().unwrap();
        assert!(msg.contains("waiting for godot"), "{msg}");
        assert_eq!(poll_blocking("x", Duration::from_secs(1), || Some(7)), 7);
    }
}
