//! `hearth keys ...`: API keys on a server.

use serde_json::{json, Value};

use crate::client::{Client, ClientArgs};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a key; it is printed once and cannot be shown again.
    Create {
        #[command(flatten)]
        c: ClientArgs,
        name: String,
    },
    /// List keys (names and ids, never the keys).
    Ls {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Revoke a key.
    Rm {
        #[command(flatten)]
        c: ClientArgs,
        id: String,
    },
}

pub async fn main(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Create { c, name } => {
            let v: Value = Client::new(&c)?
                .post("/v1/keys", &json!({ "name": name }))
                .await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", v["key"].as_str().unwrap_or_default());
                eprintln!(
                    "key id {} ({}): store it now, it is not shown again",
                    v["id"].as_str().unwrap_or_default(),
                    v["name"].as_str().unwrap_or_default()
                );
            }
        }
        Command::Ls { c } => {
            let v: Value = Client::new(&c)?.get("/v1/keys").await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v["keys"])?);
            } else {
                println!("{:<36}  {:<20}  CREATED", "ID", "NAME");
                for k in v["keys"].as_array().into_iter().flatten() {
                    println!(
                        "{:<36}  {:<20}  {}",
                        k["id"].as_str().unwrap_or_default(),
                        k["name"].as_str().unwrap_or_default(),
                        k["created_at"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        Command::Rm { c, id } => {
            Client::new(&c)?.delete(&format!("/v1/keys/{id}")).await?;
            if !c.json {
                eprintln!("revoked {id}");
            }
        }
    }
    Ok(0)
}
