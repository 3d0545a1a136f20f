//! Builds an image without the full `hearth` CLI (handy when other crates are mid-change):
//! `cargo run -p hearth-image --example build-image -- [NAME]`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let opts = hearth_image::BuildOptions { name, quiet: false };
    match hearth_image::build(&opts) {
        Ok(img) => println!("{}", serde_json::to_string_pretty(&img.manifest).unwrap()),
        Err(e) => {
            eprintln!("build-image: {e}");
            std::process::exit(1);
        }
    }
}
