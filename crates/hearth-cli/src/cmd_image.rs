//! `hearth image build|import|ls`: guest images under `$HEARTH_DATA_DIR/images/`.

use std::path::PathBuf;

use hearth_image::{BuildOptions, CustomOptions, Image};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build (or refresh) a guest image: kernel, Debian rootfs, guest binaries.
    /// Heavy steps are cached; an unchanged rebuild takes seconds.
    Build {
        /// Image name (a directory under the images dir).
        #[arg(long, default_value = "default")]
        name: String,
        /// Debian packages to install on top of the tree (comma-separated).
        // Hyphen values pass clap so that the package-name check explains the refusal.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        packages: Vec<String>,
        /// Setup script, run as root chrooted in the image tree after the packages,
        /// with the host's network.
        #[arg(long = "run", value_name = "SCRIPT")]
        script: Option<PathBuf>,
        /// Build on this image's tree instead of the default one.
        #[arg(long, value_name = "IMAGE")]
        from: Option<String>,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Import an OCI image (layout dir, OCI archive or `docker save` archive): its
    /// layers unpacked in order, Hearth's init and agent added, the usual kernel.
    Import {
        /// Image name.
        name: String,
        /// oci-archive.tar, an OCI layout directory, or docker-save.tar.
        source: PathBuf,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Delete an image through the server (`hearth serve`), which refuses (409) while
    /// VMs or other images use it, naming them.
    Rm {
        #[command(flatten)]
        c: crate::client::ClientArgs,
        name: String,
    },
    /// List built images.
    Ls {
        /// Print manifests as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

pub async fn main(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Build {
            name,
            packages,
            script,
            from,
            json,
        } => {
            let custom = !packages.is_empty() || script.is_some() || from.is_some();
            // The build runs tools for minutes; keep it off the async workers.
            let image = tokio::task::spawn_blocking(move || {
                if custom {
                    let packages = packages.into_iter().filter(|p| !p.is_empty()).collect();
                    hearth_image::custom::build(&CustomOptions {
                        name,
                        packages,
                        script,
                        from,
                        quiet: false,
                        images_dir: None,
                    })
                } else {
                    hearth_image::build(&BuildOptions { name, quiet: false })
                }
            })
            .await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&image.manifest)?);
            } else {
                print_table(&[image]);
            }
        }
        Command::Import { name, source, json } => {
            let opts = hearth_image::ImportOptions {
                name,
                source,
                quiet: false,
            };
            let image =
                tokio::task::spawn_blocking(move || hearth_image::oci::import(&opts)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&image.manifest)?);
            } else {
                print_table(&[image]);
            }
        }
        Command::Rm { c, name } => {
            crate::client::Client::new(&c)?
                .delete(&format!("/v1/images/{name}"))
                .await?;
        }
        Command::Ls { json } => {
            let images = hearth_image::list_images()?;
            if json {
                let all: Vec<_> = images.iter().map(|i| &i.manifest).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if images.is_empty() {
                eprintln!(
                    "no images in {}; build one with `hearth image build`",
                    hearth_image::images_dir().display()
                );
            } else {
                print_table(&images);
            }
        }
    }
    Ok(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0))
}

fn print_table(images: &[Image]) {
    println!(
        "{:<12} {:<20} {:<9} {:<9} {:<8} {:<8} {:<22} DIR",
        "NAME", "KERNEL", "VMLINUX", "ROOTFS", "NODE", "DENO", "CREATED"
    );
    for i in images {
        let m = &i.manifest;
        let node = m.versions.node.as_deref().unwrap_or("-");
        println!(
            "{:<12} {:<20} {:<9} {:<9} {:<8} {:<8} {:<22} {}",
            m.name,
            m.versions.kernel,
            mib(m.sizes.vmlinux),
            mib(m.sizes.rootfs),
            node.split(['+', '~', '-']).next().unwrap_or(node),
            m.versions.deno.as_deref().unwrap_or("-"),
            m.created_at,
            i.dir.display()
        );
    }
}
