//! `krio install`: lays krio down on a node: the binaries, the systemd units, a commented
//! configuration and a CNI network. Nothing the operator already has is overwritten except the
//! binaries and the units, which belong to krio.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use krio_server::config::Config;

/// The service unit shipped in `contrib/systemd/`.
const SERVICE_UNIT: &str = include_str!("../../../contrib/systemd/krio.service");
/// The socket unit shipped in `contrib/systemd/`.
const SOCKET_UNIT: &str = include_str!("../../../contrib/systemd/krio.socket");
/// The `ExecStart` binary path written in the shipped service unit.
const UNIT_BINARY: &str = "/usr/local/bin/krio";
/// The `ListenStream` path written in the shipped socket unit.
const UNIT_SOCKET: &str = "ListenStream=/run/krio/krio.sock";

/// Where `krio install` puts things. Every path is taken below `destdir` (packagers' `DESTDIR`).
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Install below this directory instead of `/` (a package build or a test).
    #[arg(long, default_value = "/")]
    pub destdir: PathBuf,
    /// Directory for the krio, krio-monitor and krioctl binaries.
    #[arg(long, default_value = "/usr/local/bin")]
    pub bin_dir: PathBuf,
    /// Directory for krio.service and krio.socket.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
}

fn below(destdir: &Path, p: &Path) -> PathBuf {
    destdir.join(p.strip_prefix("/").unwrap_or(p))
}

/// Writes `data` to `dst` atomically (temp file, fsync, rename), with `mode`. Renaming over a
/// binary that runs (a monitor of the previous version) leaves that process its old file.
fn write_atomic(dst: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = dst
        .parent()
        .with_context(|| format!("{} has no parent", dst.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.krio-install"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, dst).with_context(|| format!("renaming to {}", dst.display()))
}

/// Runs `krio install`: reads the configuration already under `destdir` (`config_path`, the
/// defaults when there is none) for `listen` and `cni.conf_dir`, copies the binaries from beside the running `krio` (krioctl when it is
/// there), writes the units with `ExecStart` and `ListenStream` matching `bin_dir` and the
/// configured `listen`, writes `/etc/krio/krio.toml` (every setting commented out with its
/// default) and makes `krio.d/` unless they exist, and installs the default CNI network into
/// `cni.conf_dir` when that holds no configuration. Prints one line per file and what to run next.
///
/// Errors: any file that cannot be read or written, with its path.
pub fn install(args: &InstallArgs, config_path: &Path) -> anyhow::Result<()> {
    let d = &args.destdir;
    let config = below(d, config_path);
    let cfg = Config::load(&config, false)?;
    let exe = std::env::current_exe().context("finding the krio binary")?;
    let from = exe
        .parent()
        .context("the krio binary has no directory")?
        .to_path_buf();
    let bin_dir = below(d, &args.bin_dir);
    for (name, required) in [("krio", true), ("krio-monitor", true), ("krioctl", false)] {
        let src = if name == "krio" {
            exe.clone()
        } else {
            from.join(name)
        };
        if !src.is_file() {
            anyhow::ensure!(!required, "{} not found beside krio", src.display());
            println!("skipped    {name} (not found beside krio)");
            continue;
        }
        let data = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        let dst = bin_dir.join(name);
        write_atomic(&dst, &data, 0o755)?;
        println!("installed  {}", dst.display());
    }
    let krio_bin = args.bin_dir.join("krio");
    let service = SERVICE_UNIT.replace(
        &format!("ExecStart={UNIT_BINARY}"),
        &format!("ExecStart={}", krio_bin.display()),
    );
    let socket = SOCKET_UNIT.replace(
        UNIT_SOCKET,
        &format!("ListenStream={}", cfg.listen.display()),
    );
    let unit_dir = below(d, &args.unit_dir);
    for (name, text) in [("krio.service", service), ("krio.socket", socket)] {
        let dst = unit_dir.join(name);
        write_atomic(&dst, text.as_bytes(), 0o644)?;
        println!("installed  {}", dst.display());
    }
    if config.exists() {
        println!("kept       {}", config.display());
    } else {
        write_atomic(
            &config,
            krio_server::config_doc::default_toml(true).as_bytes(),
            0o644,
        )?;
        println!("installed  {}", config.display());
    }
    if let Some(dropins) = config.parent().map(|p| p.join("krio.d")) {
        std::fs::create_dir_all(&dropins)
            .with_context(|| format!("creating {}", dropins.display()))?;
    }
    let cni_dir = below(d, &cfg.cni.conf_dir);
    match krio_net::cni::install_default_config(&cni_dir) {
        Ok(true) => println!(
            "installed  {}",
            cni_dir.join(krio_net::cni::DEFAULT_CONFIG_FILE).display()
        ),
        Ok(false) => println!(
            "kept       {} (it has a network configuration)",
            cni_dir.display()
        ),
        Err(e) => return Err(e).context("installing the default CNI configuration"),
    }
    println!(
        "\nnext: systemctl daemon-reload && systemctl enable --now krio.socket krio.service\n\
         then point kubelet at unix://{} (see docs/kubelet.md)",
        cfg.listen.display()
    );
    Ok(())
}
