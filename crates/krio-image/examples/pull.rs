//! Pulls one image into a store and prints the record summary and the time taken.
//!
//! `cargo run --release -p krio-image --example pull -- ROOT REFERENCE`

use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(reference)) = (args.next(), args.next()) else {
        eprintln!("usage: pull ROOT REFERENCE");
        std::process::exit(2);
    };
    let store = krio_image::ImageStore::open(root.as_ref(), krio_image::RegistryConfig::default())?;
    let t = Instant::now();
    let rec = store.pull(&reference, None).await?;
    let elapsed = t.elapsed();
    println!(
        "{} id={} layers={} size={} elapsed={:.3}s",
        reference,
        rec.id,
        rec.chain_ids.len(),
        rec.size,
        elapsed.as_secs_f64()
    );
    Ok(())
}
