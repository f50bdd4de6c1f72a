//! Seeded property / fuzz tests of what the daemon accepts from outside: CRI request
//! validation (`validate`, `ids`) and the configuration parser (`config`). Deterministic
//! (fixed seeds) so a failure reproduces; `KRIO_FUZZ_ITERS` scales the rounds. The same
//! approach as the unpack fuzz of `krio-layer` and the parser fuzz of `krio-image`.
//!
//! Properties: nothing panics; every refusal of a request is `InvalidArgument` naming a
//! `config.*` (or the given id) field, or a `FailedPrecondition` whose message starts with
//! the field; what is accepted is harmless (ids and names with no path separator, `..`,
//! NUL or control character, relative log paths that stay below their directory); an
//! unknown configuration key is refused with a message naming it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path};

use krio_cri::v1 as cri;

use crate::config::{Config, ConfigError};
use crate::error::ServerError;
use crate::{ids, validate};
use krio_testutil::{iters, Rng};

/// Input generators of this file, on top of the shared [`Rng`].
trait Inputs {
    /// A number that is usually at an edge of the checks (0, ±1, port and `i32` limits).
    fn int(&mut self) -> i64;
    /// A string of 0-6 tokens chosen to hit the edges of the checks.
    fn text(&mut self) -> String;
}

impl Inputs for Rng {
    fn int(&mut self) -> i64 {
        let random = self.next_u64() as i32 as i64;
        *self.pick(&[
            0,
            1,
            -1,
            80,
            65535,
            65536,
            i32::MAX as i64,
            i32::MIN as i64,
            random,
        ])
    }
    fn text(&mut self) -> String {
        const TOKENS: &[&str] = &[
            "a",
            "b",
            "Z",
            "0",
            "9",
            "..",
            ".",
            "/",
            "//",
            "\0",
            "\n",
            "\r",
            " ",
            "\t",
            "-",
            "_",
            "=",
            ":",
            "é",
            "\u{7f}",
            "\u{202e}",
            "\u{1b}",
            "net",
            "kernel",
            "shm_rmid_forced",
            "ipv4",
            "fs.mqueue",
            "net.ipv4.ip_forward",
            "kernel.sem",
            "%",
            "*",
            "127.0.0.1",
            "::1",
            "x.y",
            "-a",
            "a-",
            "\u{10ffff}",
        ];
        let n = self.below(7);
        let mut s = String::new();
        for _ in 0..n {
            let t: &&str = self.pick(TOKENS);
            s.push_str(t);
        }
        if self.chance(3) {
            let filler = if self.chance(50) { "é" } else { "a" };
            s.push_str(&filler.repeat(100 + self.below(300)));
        }
        s
    }
}

/// Runs `f`, failing the test with the input when it panics.
fn no_panic<T>(what: &str, input: &dyn std::fmt::Debug, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what} panicked on {input:?}"),
    }
}

/// A string is harmless as a name or id: no path separator, `..`, NUL or control character.
fn harmless(s: &str) -> bool {
    !s.contains('/') && !s.contains("..") && !s.chars().any(|c| c.is_control())
}

/// Every refusal of a request config: InvalidArgument naming a `config.` field, or a
/// FailedPrecondition (unsupported but valid) whose message starts with such a field.
fn assert_refusal_names_field(what: &str, input: &dyn std::fmt::Debug, e: &ServerError) {
    match e {
        ServerError::InvalidArgument { field, reason } => {
            assert!(
                field.starts_with("config"),
                "{what}: refusal names no config field ({field:?}: {reason}) for {input:?}"
            );
            assert!(!reason.is_empty(), "{what}: empty reason for {input:?}");
        }
        ServerError::FailedPrecondition(msg) => assert!(
            msg.starts_with("config."),
            "{what}: FailedPrecondition names no field ({msg}) for {input:?}"
        ),
        other => panic!("{what}: refusal {other:?} is not InvalidArgument for {input:?}"),
    }
    // Every refusal message stays small enough for a gRPC trailer.
    let msg = e.to_string();
    assert!(
        msg.len() <= 4096,
        "{what}: a {}-byte message for {input:?}",
        msg.len()
    );
}

#[test]
fn ids_accepted_are_harmless_and_refusals_name_the_field() {
    let mut r = Rng::new(11);
    for _ in 0..iters(20_000) {
        let id = r.text();
        let got = no_panic("ids::validate", &id, || ids::validate("container_id", &id));
        match got {
            Ok(()) => {
                assert!(
                    !id.is_empty() && id.len() <= ids::MAX_ID_LEN && harmless(&id),
                    "accepted id {id:?}"
                );
                assert!(!id.contains('\0'));
            }
            Err(ServerError::InvalidArgument { field, .. }) => assert_eq!(field, "container_id"),
            Err(e) => panic!("id {id:?} refused with {e:?}"),
        }
        let known: Vec<String> = (0..r.below(4))
            .map(|_| {
                if r.chance(50) {
                    format!("{id}{}", r.text())
                } else {
                    r.text()
                }
            })
            .collect();
        let got = no_panic("ids::resolve", &(&id, &known), || {
            ids::resolve("pod_sandbox_id", &id, &known)
        });
        match got {
            Ok(Some(k)) => {
                assert!(known.contains(&k) && k.starts_with(&id), "{id:?} -> {k:?}");
                assert!(harmless(&id));
            }
            Ok(None) => {}
            Err(ServerError::InvalidArgument { field, .. }) => {
                assert_eq!(field, "pod_sandbox_id")
            }
            Err(e) => panic!("resolve {id:?} refused with {e:?}"),
        }
    }
}

#[test]
fn quote_is_bounded_and_never_splits_a_character() {
    let mut r = Rng::new(12);
    for _ in 0..iters(5_000) {
        let mut s = r.text();
        for _ in 0..r.below(40) {
            s.push_str(&r.text());
        }
        let q = no_panic("validate::quote", &s, || validate::quote(&s));
        // Debug escaping at most multiplies a character by 10 (`\u{10ffff}`).
        assert!(
            q.len() <= validate::QUOTE_LIMIT * 10 + 32,
            "{} bytes",
            q.len()
        );
    }
}

fn random_pod(r: &mut Rng) -> cri::PodSandboxConfig {
    let mut sysctls = HashMap::new();
    for _ in 0..r.below(3) {
        let k = if r.chance(50) {
            format!(
                "{}.{}",
                r.pick(&["net", "kernel", "fs.mqueue", "vm"]),
                r.text()
            )
        } else {
            r.text()
        };
        sysctls.insert(k, r.text());
    }
    let mapping = |r: &mut Rng| cri::IdMapping {
        host_id: r.int() as u32,
        container_id: if r.chance(70) { 0 } else { r.int() as u32 },
        length: r.int() as u32,
    };
    let userns = r.chance(30).then(|| cri::UserNamespace {
        mode: r.below(6) as i32 - 1,
        uids: (0..r.below(3)).map(|_| mapping(r)).collect(),
        gids: (0..r.below(3)).map(|_| mapping(r)).collect(),
    });
    cri::PodSandboxConfig {
        metadata: r.chance(95).then(|| cri::PodSandboxMetadata {
            name: r.text(),
            namespace: r.text(),
            uid: r.text(),
            attempt: r.int() as u32,
        }),
        hostname: r.text(),
        log_directory: if r.chance(50) {
            format!("/{}", r.text())
        } else {
            r.text()
        },
        dns_config: r.chance(30).then(|| cri::DnsConfig {
            servers: (0..r.below(3)).map(|_| r.text()).collect(),
            searches: (0..r.below(3)).map(|_| r.text()).collect(),
            options: (0..r.below(3)).map(|_| r.text()).collect(),
        }),
        port_mappings: (0..r.below(3))
            .map(|_| cri::PortMapping {
                protocol: r.below(5) as i32 - 1,
                container_port: r.int() as i32,
                host_port: r.int() as i32,
                host_ip: r.text(),
            })
            .collect(),
        linux: r.chance(80).then(|| cri::LinuxPodSandboxConfig {
            cgroup_parent: if r.chance(50) {
                format!("/{}", r.text())
            } else {
                r.text()
            },
            sysctls,
            security_context: userns.map(|u| cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(u),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn pod_configs_are_refused_by_field_or_accepted_harmless() {
    let mut r = Rng::new(13);
    let mut accepted = 0;
    for _ in 0..iters(20_000) {
        let pod = random_pod(&mut r);
        let got = no_panic("validate::sandbox_config", &pod, || {
            validate::sandbox_config(&pod)
        });
        match got {
            Err(e) => assert_refusal_names_field("RunPodSandbox", &pod, &e),
            Ok(()) => {
                accepted += 1;
                let m = pod.metadata.as_ref().unwrap();
                for v in [&m.name, &m.namespace, &m.uid] {
                    assert!(
                        !v.is_empty() && !v.contains('/') && !v.chars().any(|c| c.is_control()),
                        "accepted metadata {m:?}"
                    );
                }
                assert!(
                    pod.log_directory.is_empty() || pod.log_directory.starts_with('/'),
                    "accepted log_directory {:?}",
                    pod.log_directory
                );
                assert!(
                    !pod.log_directory.contains('\0'),
                    "accepted log_directory {:?}",
                    pod.log_directory
                );
                assert!(
                    pod.hostname.is_empty() || harmless(&pod.hostname),
                    "accepted hostname {:?}",
                    pod.hostname
                );
                if let Some(l) = &pod.linux {
                    for (k, v) in &l.sysctls {
                        assert!(
                            !k.contains("..") && !v.contains('\n') && !v.contains('\0'),
                            "accepted sysctl {k:?}={v:?}"
                        );
                    }
                    let cg = &l.cgroup_parent;
                    assert!(
                        cg.is_empty()
                            || (cg.starts_with('/')
                                && !cg.split('/').any(|c| c == "..")
                                && !cg.chars().any(|c| c.is_control())),
                        "accepted cgroup_parent {cg:?}"
                    );
                }
            }
        }
    }
    assert!(
        accepted > 0,
        "no random pod config was accepted: the generator tests only refusals"
    );
}

fn random_container(r: &mut Rng) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: r.chance(95).then(|| cri::ContainerMetadata {
            name: r.text(),
            attempt: r.int() as u32,
        }),
        image: r.chance(95).then(|| cri::ImageSpec {
            image: r.text(),
            ..Default::default()
        }),
        stop_signal: if r.chance(80) {
            r.below(40) as i32
        } else {
            r.int() as i32
        },
        log_path: r.text(),
        mounts: (0..r.below(3))
            .map(|_| cri::Mount {
                container_path: r.text(),
                host_path: r.text(),
                readonly: r.chance(50),
                recursive_read_only: r.chance(50),
                propagation: r.below(5) as i32 - 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn container_configs_are_refused_by_field_or_accepted_harmless() {
    let mut r = Rng::new(14);
    let mut accepted = 0;
    for _ in 0..iters(20_000) {
        let c = random_container(&mut r);
        let got = no_panic("validate::container_config", &c, || {
            validate::container_config(&c)
        });
        match got {
            Err(e) => assert_refusal_names_field("CreateContainer", &c, &e),
            Ok(()) => {
                accepted += 1;
                let name = &c.metadata.as_ref().unwrap().name;
                assert!(
                    !name.is_empty()
                        && !name.contains('/')
                        && !name.chars().any(|c| c.is_control()),
                    "accepted name {name:?}"
                );
                let p = Path::new(&c.log_path);
                assert!(
                    !p.is_absolute()
                        && p.components()
                            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
                        && !c.log_path.contains('\0'),
                    "accepted log_path {:?}",
                    c.log_path
                );
            }
        }
    }
    assert!(accepted > 0, "no random container config was accepted");
}

/// Every key of the configuration with a value of the right type, as TOML text.
const KNOWN: &[(&str, &str, &str)] = &[
    ("", "listen", "\"/run/krio/x.sock\""),
    ("", "root", "\"/var/lib/krio\""),
    ("", "state_dir", "\"/run/krio\""),
    ("", "log_level", "\"info\""),
    ("", "log_format", "\"json\""),
    ("", "metrics_listen", "\"127.0.0.1:9090\""),
    ("", "cgroup_driver", "\"cgroupfs\""),
    ("", "cgroup_parent", "\"/krio\""),
    ("", "default_runtime", "\"runc\""),
    ("", "monitor_path", "\"\""),
    ("", "stream_address", "\"127.0.0.1\""),
    ("", "stream_port", "0"),
    ("cni", "conf_dir", "\"/etc/cni/net.d\""),
    ("cni", "bin_dirs", "[\"/usr/lib/cni\"]"),
    ("cni", "install_default_config", "false"),
    (
        "image",
        "registries_conf",
        "\"/etc/containers/registries.conf\"",
    ),
    ("image", "insecure_registries", "[\"localhost:5000\"]"),
    ("image", "pinned_images", "[\"pause*\"]"),
    ("container", "pids_limit", "1024"),
    ("container", "log_line_max", "16384"),
    ("container", "log_size_max", "0"),
    ("container", "default_ulimits", "[\"nofile=1024:4096\"]"),
    ("container", "default_capabilities", "[\"CHOWN\"]"),
    ("container", "no_pivot", "false"),
    ("runtimes.runc", "path", "\"runc\""),
    ("runtimes.runc", "runtime_args", "[\"--debug\"]"),
    ("runtimes.runc", "pod_sandbox", "\"none\""),
    ("runtimes.runc", "allowed_annotations", "[\"dev.\"]"),
];

/// Values of every type, and a few of the right type that fail validation.
const VALUES: &[&str] = &[
    "\"\"",
    "\"relative\"",
    "\"/abs\"",
    "\"a\\u0000b\"",
    "\"systemd\"",
    "\"nonsense\"",
    "-2",
    "0",
    "1",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "nan",
    "true",
    "[]",
    "[\"\"]",
    "[\"=\", \"nofile=5:1\", \"bogus=1:2\", \"CAP_NOPE\"]",
    "[1, 2]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
];

/// A random configuration file; returns it and the unknown key it holds, if any.
fn random_config(r: &mut Rng) -> (String, Option<String>) {
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    let add = |tables: &mut Vec<(String, Vec<String>)>, table: &str, line: String| match tables
        .iter_mut()
        .find(|(t, _)| t == table)
    {
        Some((_, lines)) => lines.push(line),
        None => tables.push((table.to_string(), vec![line])),
    };
    for _ in 0..r.below(8) {
        let (table, key, good) = *r.pick(KNOWN);
        let value = if r.chance(60) { good } else { r.pick(VALUES) };
        // A key twice is a TOML error; keep the first.
        if tables
            .iter()
            .any(|(t, l)| t == table && l.iter().any(|x| x.starts_with(&format!("{key} ="))))
        {
            continue;
        }
        add(&mut tables, table, format!("{key} = {value}"));
    }
    let mut unknown = None;
    if r.chance(40) {
        let table = *r.pick(&["", "cni", "image", "container", "runtimes.runc"]);
        let key = format!("unknown_{}", r.below(1000));
        add(&mut tables, table, format!("{key} = {}", r.pick(VALUES)));
        unknown = Some(key);
    }
    // Top-level keys first: after a [table] header they would belong to it.
    tables.sort_by_key(|(t, _)| !t.is_empty());
    let mut text = String::new();
    for (t, lines) in tables {
        if !t.is_empty() {
            text.push_str(&format!("[{t}]\n"));
        }
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
    }
    (text, unknown)
}

#[test]
fn config_parse_never_panics_and_names_unknown_keys() {
    let mut r = Rng::new(15);
    let origin = Path::new("/etc/krio/krio.toml");
    let mut accepted = 0;
    for _ in 0..iters(3_000) {
        let (text, unknown) = random_config(&mut r);
        let got = no_panic("Config::parse", &text, || Config::parse(&text, origin));
        match (&got, &unknown) {
            (Ok(_), Some(key)) => panic!("unknown key {key} accepted in\n{text}"),
            (Err(ConfigError::Parse { path, .. }), Some(key)) => {
                assert_eq!(path, origin);
                // A wrong-typed known key may be reported before it; alone, the unknown key
                // must be named.
                let alone: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with('[') || l.starts_with(key.as_str()))
                    .collect();
                match Config::parse(&alone.join("\n"), origin) {
                    Err(ConfigError::Parse { source, .. }) => assert!(
                        source.to_string().contains(key.as_str()),
                        "unknown key {key} not named: {source}"
                    ),
                    other => panic!("unknown key {key} alone gave {other:?}"),
                }
            }
            (Err(_), Some(key)) => panic!("unknown key {key} gave {got:?} for\n{text}"),
            (Ok(_), None) => accepted += 1,
            (Err(e), None) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(accepted > 0, "no random configuration was accepted");
}

#[test]
fn mangled_config_text_never_panics() {
    let mut r = Rng::new(16);
    let origin = Path::new("/etc/krio/krio.toml");
    let base = Config::default().to_toml();
    let bytes = base.as_bytes();
    for _ in 0..iters(2_000) {
        let mut b = bytes.to_vec();
        for _ in 0..1 + r.below(8) {
            let at = r.below(b.len() + 1);
            match r.below(3) {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 => b.insert(at, *r.pick(b"[]{}=\"'\n#.,\\0x-+e ")),
                _ => {
                    let end = (at + r.below(40)).min(b.len());
                    b.drain(at..end);
                }
            }
        }
        let text = String::from_utf8_lossy(&b).into_owned();
        no_panic("Config::parse", &text, || {
            let _ = Config::parse(&text, origin);
        });
    }
}
