//! `hearth keys ...`: API keys on a server.

use hearth_api::keys::{CreateKey, KeyList, NewKey};

use crate::client::{Client, ClientArgs};
use crate::cmd_vm::print_json;

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
            let k: NewKey = Client::new(&c)?
                .post("/v1/keys", &CreateKey { name })
                .await?;
            if c.json {
                print_json(&k);
            } else {
                println!("{}", k.key);
                eprintln!(
                    "key id {} ({}): store it now, it is not shown again",
                    k.id, k.name
                );
            }
        }
        Command::Ls { c } => {
            let list: KeyList = Client::new(&c)?.get("/v1/keys").await?;
            if c.json {
                print_json(&list.keys);
            } else {
                println!("{:<36}  {:<20}  CREATED", "ID", "NAME");
                for k in list.keys {
                    println!("{:<36}  {:<20}  {}", k.id, k.name, k.created_at);
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
