//! Placeholder until this command lands.

#[derive(clap::Subcommand)]
pub enum Command {
    /// Not implemented yet.
    Todo,
}

pub async fn main(_cmd: Command) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
