//! `ssechat token add|list|del`.

use std::time::Duration;

use clap::Subcommand;

use super::user::say;
use crate::accounts;
use crate::config::positive_duration;
use crate::store::Store;

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Makes a token for NAME and prints it, once: only its hash is kept.
    Add {
        name: String,
        /// How long it is valid (for example `90d`) [default: until deleted].
        #[arg(long, value_parser = positive_duration)]
        expires: Option<Duration>,
        /// What it is for, shown by `token list`.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Lists NAME's tokens (their labels and expiry; the tokens themselves are not kept).
    List { name: String },
    /// Deletes a token. A token may begin with `-`: it is taken as the token, not a flag.
    Del {
        #[arg(allow_hyphen_values = true)]
        token: String,
    },
}

pub async fn run(command: TokenCommand, store: &dyn Store) -> Result<(), String> {
    match command {
        TokenCommand::Add { name, expires, label } => {
            let (secret, token) = accounts::add_token(store, &name, expires, &label).await.map_err(say)?;
            eprintln!("token for {} (shown once; keep it):", token.owner.as_str());
            println!("{secret}");
        }
        TokenCommand::List { name } => {
            let user = accounts::find(store, &name).await.map_err(say)?;
            for token in store.tokens(&user.name).await.map_err(|e| e.to_string())? {
                let expires = token.expires.map_or_else(|| "never".to_owned(), |t| t.rfc3339());
                println!(
                    "{}\tcreated {}\texpires {expires}\t{}",
                    &token.hash[..12],
                    token.created.rfc3339(),
                    token.label
                );
            }
        }
        TokenCommand::Del { token } => {
            accounts::delete_token(store, &token).await.map_err(say)?;
            println!("deleted the token");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::TokenCommand;
    use crate::cli::{Cli, Command};

    #[test]
    fn a_token_that_begins_with_a_dash_is_a_token() {
        // Tokens are base64url: one in 64 begins with `-`.
        let cli = Cli::try_parse_from(["ssechat", "token", "del", "-pIfM3x"]).unwrap();
        let Some(Command::Token(TokenCommand::Del { token })) = cli.command else { panic!("{cli:?}") };
        assert_eq!(token, "-pIfM3x");
    }
}
