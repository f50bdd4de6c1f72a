//! Applies an uncompressed layer tar onto an empty directory:
//! `apply LAYER.tar TARGET [LOWER...]` (lowers topmost first). Prints the stats and time.

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (Some(tar), Some(target)) = (args.first(), args.get(1)) else {
        eprintln!("usage: apply LAYER.tar TARGET [LOWER...]");
        return std::process::ExitCode::from(2);
    };
    let file = match std::fs::File::open(tar) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("open {}: {e}", tar.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let start = std::time::Instant::now();
    match krio_layer::apply_layer(file, target, &args[2..]) {
        Ok(stats) => {
            println!("{stats:?} in {:?}", start.elapsed());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
