//! Builds Hearth guest images: a small kernel from Debian's `linux-source-6.1`, a
//! Debian base rootfs with Python/Node/Deno, the guest binaries, an overlay template and
//! a manifest. Heavy steps are cached by input hash under `$HEARTH_CACHE_DIR`, so a
//! warm rebuild only re-assembles when the guest binaries change.

pub mod assemble;
mod bins;
pub mod compose;
pub mod custom;
mod error;
pub mod kernel;
pub mod manifest;
pub mod oci;
pub mod paths;
pub mod rootfs;
mod stacked;
pub mod template;
mod util;

pub use assemble::{build, find_guest_bins, BuildOptions};
pub use custom::CustomOptions;
pub use error::{Error, Result};
pub use manifest::{
    children_of, layers_of, list_images, open_image, read_manifest, Image, Kind, Manifest,
    MAX_LAYERS,
};
pub use oci::ImportOptions;
pub use paths::{cache_dir, data_dir, image_dir, images_dir, vms_dir};
