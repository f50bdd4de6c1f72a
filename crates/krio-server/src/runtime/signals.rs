//! CRI `Signal` (the `stop_signal` of `ContainerConfig` and `ContainerStatus`, added in
//! Kubernetes 1.33) to and from Linux signal numbers.
//!
//! Real-time signals follow glibc and Go's `moby/sys/signal`, which kubelet and the other
//! runtimes use: `SIGRTMIN` is 34 (glibc keeps 32 and 33 for itself), `SIGRTMAX` 64, and
//! `SIGRTMINPLUSn` / `SIGRTMAXMINUSn` count from them.

use krio_cri::v1 as cri;

/// glibc's `SIGRTMIN`.
const RTMIN: i32 = 34;
/// `SIGRTMAX` on Linux.
const RTMAX: i32 = 64;

/// The classic signals by CRI name, with their Linux numbers.
const NAMED: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGILL", libc::SIGILL),
    ("SIGTRAP", libc::SIGTRAP),
    ("SIGABRT", libc::SIGABRT),
    ("SIGIOT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGSTKFLT", libc::SIGSTKFLT),
    ("SIGCHLD", libc::SIGCHLD),
    ("SIGCLD", libc::SIGCHLD),
    ("SIGCONT", libc::SIGCONT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGTSTP", libc::SIGTSTP),
    ("SIGTTIN", libc::SIGTTIN),
    ("SIGTTOU", libc::SIGTTOU),
    ("SIGURG", libc::SIGURG),
    ("SIGXCPU", libc::SIGXCPU),
    ("SIGXFSZ", libc::SIGXFSZ),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPROF", libc::SIGPROF),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGIO", libc::SIGIO),
    ("SIGPOLL", libc::SIGIO),
    ("SIGPWR", libc::SIGPWR),
    ("SIGSYS", libc::SIGSYS),
];

/// The Linux number of a CRI `Signal` value; `None` for `RUNTIME_DEFAULT` and for values
/// the enum does not have.
pub(crate) fn number(value: i32) -> Option<i32> {
    let name = cri::Signal::try_from(value).ok()?.as_str_name();
    if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
        return n.parse::<i32>().ok().map(|n| RTMIN + n);
    }
    if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
        return n.parse::<i32>().ok().map(|n| RTMAX - n);
    }
    match name {
        "SIGRTMIN" => Some(RTMIN),
        "SIGRTMAX" => Some(RTMAX),
        _ => NAMED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s),
    }
}

/// The CRI `Signal` value of a Linux signal number (the canonical name where two share a
/// number: SIGABRT, SIGCHLD, SIGIO); `RUNTIME_DEFAULT` (0) for a number it has no name for.
pub(crate) fn to_cri(signal: i32) -> i32 {
    let name = match signal {
        RTMIN => "SIGRTMIN".to_string(),
        RTMAX => "SIGRTMAX".to_string(),
        s if s > RTMIN && s - RTMIN <= 15 => format!("SIGRTMINPLUS{}", s - RTMIN),
        s if s < RTMAX && RTMAX - s <= 14 && s > RTMIN => format!("SIGRTMAXMINUS{}", RTMAX - s),
        s => match NAMED.iter().find(|(_, n)| *n == s) {
            Some((name, _)) => (*name).to_string(),
            None => return 0,
        },
    };
    cri::Signal::from_str_name(&name).map_or(0, |s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_value_maps_and_round_trips() {
        assert_eq!(number(cri::Signal::RuntimeDefault as i32), None);
        assert_eq!(number(66), None);
        assert_eq!(number(-1), None);
        for v in 1..=65 {
            let n = number(v).unwrap_or_else(|| panic!("value {v} has no number"));
            assert!((1..=64).contains(&n), "{v} -> {n}");
            // Aliases come back as their canonical name, which has the same number.
            assert_eq!(number(to_cri(n)), Some(n), "{v}");
        }
    }

    #[test]
    fn known_numbers() {
        let n = |s: cri::Signal| number(s as i32).unwrap();
        assert_eq!(n(cri::Signal::Sigterm), 15);
        assert_eq!(n(cri::Signal::Sigkill), 9);
        assert_eq!(n(cri::Signal::Sigquit), 3);
        assert_eq!(n(cri::Signal::Sigwinch), 28);
        assert_eq!(n(cri::Signal::Sigrtmin), 34);
        assert_eq!(n(cri::Signal::Sigrtminplus1), 35);
        assert_eq!(n(cri::Signal::Sigrtminplus15), 49);
        assert_eq!(n(cri::Signal::Sigrtmaxminus14), 50);
        assert_eq!(n(cri::Signal::Sigrtmaxminus1), 63);
        assert_eq!(n(cri::Signal::Sigrtmax), 64);
        assert_eq!(to_cri(15), cri::Signal::Sigterm as i32);
        assert_eq!(to_cri(6), cri::Signal::Sigabrt as i32);
        assert_eq!(to_cri(50), cri::Signal::Sigrtmaxminus14 as i32);
    }
}
