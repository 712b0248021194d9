//! `ssechat access [SUBJECT PATTERN PERM | --reset SUBJECT [PATTERN]]`.

use super::{Outcome, failed, invalid};
use crate::policy::{Perm, RoomPattern, Rule, Subject};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// Remove SUBJECT's rules (only the one for PATTERN, if given).
    #[arg(long)]
    reset: bool,
    /// A user name, `*` (everyone, guests included) or `@users` (anyone signed in).
    subject: Option<String>,
    /// A room name; `*` matches any run of characters.
    pattern: Option<String>,
    /// rw, ro, wo, deny or mod.
    perm: Option<String>,
}

pub async fn run(args: AccessArgs, store: &dyn Store) -> Outcome {
    match (args.reset, args.subject, args.pattern, args.perm) {
        (false, None, None, None) => list(store).await,
        (true, Some(subject), pattern, None) => {
            let subject = Subject::parse(&subject).map_err(invalid)?;
            let pattern = pattern.as_deref().map(RoomPattern::parse).transpose().map_err(invalid)?;
            let removed = store.reset_rules(&subject, pattern.as_ref()).await.map_err(failed)?;
            Ok(format!("removed {removed} rule(s) of {subject}"))
        }
        (false, Some(subject), Some(pattern), Some(perm)) => {
            let rule = Rule {
                subject: Subject::parse(&subject).map_err(invalid)?,
                pattern: RoomPattern::parse(&pattern).map_err(invalid)?,
                perm: Perm::parse(&perm).map_err(invalid)?,
            };
            store.set_rule(&rule).await.map_err(failed)?;
            Ok(format!("rule set: {rule}"))
        }
        _ => Err("usage: ssechat access (lists the rules) | ssechat access SUBJECT PATTERN PERM | \
                  ssechat access --reset SUBJECT [PATTERN]"
            .to_owned()),
    }
}

async fn list(store: &dyn Store) -> Outcome {
    let mut rules = store.directory().await.map_err(failed)?.rules;
    if rules.is_empty() {
        return Ok("no access rules (the server's --default-access applies everywhere)".to_owned());
    }
    rules.sort_by(|a, b| {
        (a.subject.to_string(), a.pattern.as_str()).cmp(&(b.subject.to_string(), b.pattern.as_str()))
    });
    Ok(rules.iter().map(|r| format!("{r}\n")).collect())
}
