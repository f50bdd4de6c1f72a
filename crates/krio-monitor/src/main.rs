//! `krio-monitor`: the per-container monitor binary (see the `krio_monitor` library docs).

fn main() {
    std::process::exit(krio_monitor::main_entry());
}
