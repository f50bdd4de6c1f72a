//! `krio-testimg`: build krio's test images and push them to a local registry.
//!
//! * `krio-testimg push --registry 127.0.0.1:5000 [--only NAME]...` prints `<reference> <digest>` per image.
//! * `krio-testimg list` prints the image names.
//! * `krio-testimg layout --out DIR [--only NAME]...` writes an OCI image layout instead of pushing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use krio_testimg::catalog::{self, Catalog, IMAGE_NAMES};
use krio_testimg::{image, RegistryClient, TestImage};

#[derive(Parser)]
#[command(
    name = "krio-testimg",
    about = "Build krio's busybox-based test images and push them to a registry"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build and push images; prints `<reference> <manifest digest>` per image.
    Push {
        /// Registry as host:port (plain HTTP).
        #[arg(long, env = "KRIO_TEST_REGISTRY", default_value = "127.0.0.1:5000")]
        registry: String,
        /// Only these images (repeatable); default all.
        #[arg(long)]
        only: Vec<String>,
        /// busybox-static binary to package.
        #[arg(long, default_value = catalog::HOST_BUSYBOX)]
        busybox: PathBuf,
    },
    /// Print the image names.
    List,
    /// Write the images as an OCI image layout directory.
    Layout {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Only these images (repeatable); default all.
        #[arg(long)]
        only: Vec<String>,
        /// busybox-static binary to package.
        #[arg(long, default_value = catalog::HOST_BUSYBOX)]
        busybox: PathBuf,
    },
}

fn build(busybox: &Path, only: &[String]) -> krio_testimg::Result<Vec<TestImage>> {
    let cat = Catalog::new(busybox)?;
    if only.is_empty() {
        cat.build_all()
    } else {
        only.iter().map(|n| cat.build(n)).collect()
    }
}

fn run(cli: Cli) -> krio_testimg::Result<()> {
    match cli.cmd {
        Cmd::List => {
            for n in IMAGE_NAMES {
                println!("{n}");
            }
        }
        Cmd::Push {
            registry,
            only,
            busybox,
        } => {
            let client = RegistryClient::new(&registry)?;
            client.ping()?;
            for img in build(&busybox, &only)? {
                let p = client.push_test_image(&img)?;
                println!("{} {}", p.reference, p.digest);
            }
        }
        Cmd::Layout { out, only, busybox } => {
            let imgs = build(&busybox, &only)?;
            let names: Vec<String> = imgs
                .iter()
                .map(|i| format!("{}:{}", i.repository, i.tag))
                .collect();
            let items: Vec<(&str, &krio_testimg::Artifact)> = names
                .iter()
                .map(String::as_str)
                .zip(imgs.iter().map(|i| &i.artifact))
                .collect();
            image::write_oci_layout(&out, &items)?;
            for (n, i) in names.iter().zip(&imgs) {
                println!("{n} {}", i.artifact.digest());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's Display already includes its source.
            eprintln!("krio-testimg: error: {e}");
            ExitCode::FAILURE
        }
    }
}
