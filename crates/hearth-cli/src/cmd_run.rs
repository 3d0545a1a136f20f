//! Placeholder until this command lands.

#[derive(clap::Args)]
pub struct Args {}

pub async fn main(_args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
