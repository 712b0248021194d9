//! `ssechat user add|del|passwd|list`.

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;

use crate::accounts::{self, AccountError};
use crate::store::Store;

#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Adds a user. The password comes from SSECHAT_PASSWORD, else a prompt, else a line of stdin.
    Add {
        name: String,
        /// May do everything, in every room.
        #[arg(long)]
        admin: bool,
    },
    /// Deletes a user and their tokens; their sessions and open streams end.
    Del { name: String },
    /// Changes a user's password (read like `add`'s); their sessions and open streams end.
    Passwd { name: String },
    /// Lists every user.
    List,
}

pub async fn run(command: UserCommand, store: &dyn Store) -> Result<(), String> {
    match command {
        UserCommand::Add { name, admin } => {
            let password = read_password(&name)?;
            let user = accounts::add_user(store, &name, &password, admin).await.map_err(say)?;
            let role = if user.admin { "admin" } else { "user" };
            println!("added {role} {}", user.name.as_str());
        }
        UserCommand::Del { name } => {
            accounts::delete_user(store, &name).await.map_err(say)?;
            println!("deleted user {name}");
        }
        UserCommand::Passwd { name } => {
            accounts::find(store, &name).await.map_err(say)?;
            let password = read_password(&name)?;
            accounts::set_password(store, &name, &password).await.map_err(say)?;
            println!("changed the password of {name}");
        }
        UserCommand::List => {
            for user in store.users().await.map_err(|e| e.to_string())? {
                let role = if user.admin { "admin" } else { "user" };
                println!("{}\t{role}\t{}", user.name.as_str(), user.created.rfc3339());
            }
        }
    }
    Ok(())
}

pub(super) fn say(e: AccountError) -> String {
    e.to_string()
}

/// `SSECHAT_PASSWORD`, else a prompt without echo on a terminal, else one line of stdin.
fn read_password(name: &str) -> Result<String, String> {
    if let Ok(password) = std::env::var("SSECHAT_PASSWORD") {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("password for {name}: "))
            .map_err(|e| format!("cannot read the password: {e}"));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
