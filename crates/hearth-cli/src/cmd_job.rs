//! Placeholder until this command lands.

#[derive(clap::Subcommand)]
pub enum Command {
    /// Not implemented yet.
    Todo,
}

#[derive(clap::Subcommand)]
pub enum ScriptCommand {
    /// Not implemented yet.
    Todo,
}

pub async fn main(_cmd: Command) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

pub async fn script_main(_cmd: ScriptCommand) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
