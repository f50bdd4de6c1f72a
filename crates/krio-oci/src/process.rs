//! `process.args`, `process.env` and `process.cwd` resolution (CRI `ContainerConfig` + image config).

use krio_cri::v1::ContainerConfig;
use oci_spec::image::Config as ImageConfig;

use crate::error::SpecError;

/// The `PATH` used when neither the image nor the CRI config sets one (containerd / Docker default).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves `process.args` with Docker semantics (as containerd's CRI plugin does):
/// - CRI `command` set: args = `command ++ args`; the image `Entrypoint` and `Cmd` are both ignored (so an empty
///   CRI `args` does NOT fall back to the image `Cmd`).
/// - CRI `command` empty: args = image `Entrypoint ++ (CRI args if non-empty else image Cmd)`; an image
///   `Entrypoint` of exactly `[""]` means "no entrypoint".
///
/// Errors: [`SpecError::NoCommand`] when the result is empty; `InvalidField` when an argument contains NUL.
pub(crate) fn resolve_args(
    cfg: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = if !cfg.command.is_empty() {
        cfg.command.iter().chain(cfg.args.iter()).cloned().collect()
    } else {
        let mut entrypoint = image
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default();
        if entrypoint.len() == 1 && entrypoint[0].is_empty() {
            entrypoint.clear();
        }
        let tail = if !cfg.args.is_empty() {
            cfg.args.clone()
        } else {
            image.and_then(|c| c.cmd().clone()).unwrap_or_default()
        };
        entrypoint.into_iter().chain(tail).collect()
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    if let Some(i) = args.iter().position(|a| a.contains('\0')) {
        return Err(SpecError::invalid(
            format!("args[{i}]"),
            "contains a NUL byte",
        ));
    }
    Ok(args)
}

/// Resolves `process.env`: `HOSTNAME=<hostname>` (containerd adds it first, when a hostname is known), then the
/// image `Env`, then the CRI `envs`; a later entry replaces an earlier one with the same key in place. When no
/// entry sets `PATH`, [`DEFAULT_PATH_ENV`] is appended (containerd `WithDefaultPathEnv`).
///
/// Errors: `InvalidField` naming `envs[i].key` / `envs[i].value` / `image config Env[i]` for an empty key, a key
/// containing `=`, or NUL bytes.
pub(crate) fn resolve_env(
    cfg: &ContainerConfig,
    image: Option<&ImageConfig>,
    hostname: Option<&str>,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(slot) = env.iter_mut().find(|(key, _)| key == k) {
            slot.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        set("HOSTNAME", h);
    }
    for (i, entry) in image
        .and_then(|c| c.env().as_ref())
        .map(|v| v.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let field = format!("image config Env[{i}]");
        // An entry without '=' is kept as a variable with an empty value (Docker keeps "KEY" as-is; runc would
        // pass it through verbatim; an empty value is the closest well-formed equivalent).
        let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        validate_env(&field, k, v)?;
        set(k, v);
    }
    for (i, kv) in cfg.envs.iter().enumerate() {
        // `KeyValue.value` is `bytes` on the wire since cri-api v0.33; the OCI spec's env is
        // UTF-8 text, so a value that is not UTF-8 cannot be passed on.
        let value = std::str::from_utf8(&kv.value).map_err(|e| {
            SpecError::invalid(format!("envs[{i}].value"), format!("not UTF-8: {e}"))
        })?;
        validate_env(&format!("envs[{i}]"), &kv.key, value)?;
        set(&kv.key, value);
    }
    let has_path = env.iter().any(|(k, _)| k == "PATH");
    let mut out: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !has_path {
        out.push(DEFAULT_PATH_ENV.to_string());
    }
    Ok(out)
}

fn validate_env(field: &str, key: &str, value: &str) -> Result<(), SpecError> {
    if key.is_empty() {
        return Err(SpecError::invalid(format!("{field}.key"), "empty key"));
    }
    if key.contains('=') || key.contains('\0') {
        return Err(SpecError::invalid(
            format!("{field}.key"),
            format!("{key:?} contains '=' or NUL"),
        ));
    }
    if value.contains('\0') {
        return Err(SpecError::invalid(
            format!("{field}.value"),
            "contains a NUL byte",
        ));
    }
    Ok(())
}

/// Resolves `process.cwd`: CRI `working_dir`, else image `WorkingDir`, else `/`. The chosen value must be an
/// absolute path without NUL (runc rejects relative cwds) and without `..` components (as mount destinations);
/// it is returned cleaned of `.` components and repeated slashes.
///
/// Errors: `InvalidField` naming `working_dir` or `image config WorkingDir`.
pub(crate) fn resolve_cwd(
    cfg: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<String, SpecError> {
    let (field, cwd) = if !cfg.working_dir.is_empty() {
        ("working_dir", cfg.working_dir.clone())
    } else if let Some(w) = image
        .and_then(|c| c.working_dir().clone())
        .filter(|w| !w.is_empty())
    {
        ("image config WorkingDir", w)
    } else {
        return Ok("/".to_string());
    };
    // The same rule as mount destinations: absolute, no NUL, no `..`. What is left is resolved
    // inside the rootfs by the runtime (runc joins it to the rootfs without leaving it, following
    // the image's links within it); `.` and repeated slashes are cleaned here.
    crate::mounts::validate_abs_path(field, &cwd)?;
    let clean: std::path::PathBuf = std::path::Path::new(&cwd).components().collect();
    Ok(clean.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::KeyValue;
    use oci_spec::image::ConfigBuilder;

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn image(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let mut b = ConfigBuilder::default();
        if let Some(ep) = ep {
            b = b.entrypoint(ep.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        if let Some(cmd) = cmd {
            b = b.cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        b.build().unwrap()
    }

    #[test]
    fn args_table() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // CRI command + args win outright.
            (
                &["/bin/x"],
                &["a"],
                Some(&["/ep"]),
                Some(&["c"]),
                &["/bin/x", "a"],
            ),
            // command set, args empty: image Cmd NOT used.
            (&["/bin/x"], &[], Some(&["/ep"]), Some(&["c"]), &["/bin/x"]),
            // args only: image entrypoint + CRI args.
            (
                &[],
                &["a", "b"],
                Some(&["/ep"]),
                Some(&["c"]),
                &["/ep", "a", "b"],
            ),
            // nothing from CRI: entrypoint + cmd.
            (
                &[],
                &[],
                Some(&["/ep", "-v"]),
                Some(&["c"]),
                &["/ep", "-v", "c"],
            ),
            // no entrypoint: cmd alone.
            (
                &[],
                &[],
                None,
                Some(&["sh", "-c", "true"]),
                &["sh", "-c", "true"],
            ),
            // entrypoint [""] means none.
            (&[], &[], Some(&[""]), Some(&["c"]), &["c"]),
            (&[], &["a"], None, None, &["a"]),
        ];
        for (command, args, ep, cmd, want) in cases {
            let img = image(*ep, *cmd);
            let got = resolve_args(&cfg(command, args), Some(&img)).unwrap();
            assert_eq!(
                got, *want,
                "command={command:?} args={args:?} ep={ep:?} cmd={cmd:?}"
            );
        }
        assert!(matches!(
            resolve_args(&cfg(&[], &[]), Some(&image(None, None))),
            Err(SpecError::NoCommand)
        ));
        assert!(matches!(
            resolve_args(&cfg(&[], &[]), None),
            Err(SpecError::NoCommand)
        ));
        assert!(resolve_args(&cfg(&["a\0b"], &[]), None).is_err());
    }

    #[test]
    fn env_table() {
        let img = ConfigBuilder::default()
            .env(vec![
                "A=img".to_string(),
                "PATH=/img".to_string(),
                "B=1".to_string(),
            ])
            .build()
            .unwrap();
        let mut c = cfg(&["x"], &[]);
        c.envs = vec![
            KeyValue {
                key: "B".into(),
                value: "cri".into(),
            },
            KeyValue {
                key: "C".into(),
                value: "x=y".into(),
            },
            KeyValue {
                key: "B".into(),
                value: "last".into(),
            },
        ];
        let env = resolve_env(&c, Some(&img), Some("pod-1")).unwrap();
        assert_eq!(
            env,
            vec!["HOSTNAME=pod-1", "A=img", "PATH=/img", "B=last", "C=x=y"]
        );

        let env = resolve_env(&cfg(&["x"], &[]), None, None).unwrap();
        assert_eq!(env, vec![DEFAULT_PATH_ENV.to_string()]);

        for (k, v) in [("", "v"), ("A=B", "v"), ("A", "v\0")] {
            let mut c = cfg(&["x"], &[]);
            c.envs = vec![KeyValue {
                key: k.into(),
                value: v.into(),
            }];
            let e = resolve_env(&c, None, None).unwrap_err().to_string();
            assert!(e.contains("envs[0]"), "{e}");
        }

        // `KeyValue.value` is bytes on the wire: a value that is not UTF-8 is refused.
        let mut c = cfg(&["x"], &[]);
        c.envs = vec![KeyValue {
            key: "A".into(),
            value: vec![b'a', 0xff],
        }];
        let e = resolve_env(&c, None, None).unwrap_err().to_string();
        assert!(e.contains("envs[0].value") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn cwd_table() {
        let img = ConfigBuilder::default()
            .working_dir("/img")
            .build()
            .unwrap();
        let mut c = cfg(&["x"], &[]);
        assert_eq!(resolve_cwd(&c, Some(&img)).unwrap(), "/img");
        assert_eq!(resolve_cwd(&c, None).unwrap(), "/");
        c.working_dir = "/cri".into();
        assert_eq!(resolve_cwd(&c, Some(&img)).unwrap(), "/cri");
        c.working_dir = "rel".into();
        assert!(resolve_cwd(&c, Some(&img))
            .unwrap_err()
            .to_string()
            .contains("working_dir"));
        for bad in ["/a/../../etc", "/..", "/x/.."] {
            c.working_dir = bad.into();
            let e = resolve_cwd(&c, Some(&img)).unwrap_err().to_string();
            assert!(e.contains("working_dir") && e.contains(".."), "{bad}: {e}");
        }
        c.working_dir = "/a/./b//c/".into();
        assert_eq!(resolve_cwd(&c, None).unwrap(), "/a/b/c");
        c.working_dir = String::new();
        let img = ConfigBuilder::default()
            .working_dir("/x/../..")
            .build()
            .unwrap();
        assert!(resolve_cwd(&c, Some(&img))
            .unwrap_err()
            .to_string()
            .contains("WorkingDir"));
    }
}
