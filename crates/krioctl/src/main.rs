//! A crictl-style CLI that speaks CRI to any runtime endpoint.

use clap::Parser;
use krioctl::cli::Cli;
use krioctl::error::Error;

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("krioctl: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(krioctl::commands::run(cli)) {
        Ok(code) => code,
        // `krioctl logs | head`: a closed pipe is not an error worth reporting.
        Err(Error::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("krioctl: {e}");
            1
        }
    };
    std::process::exit(code);
}
