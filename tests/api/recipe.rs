//! The README's private-team recipe ("Private rooms and moderation"), run as written: each
//! line with the real binary, in a fresh directory, the password typed on stdin. Only the
//! server's address differs (a free port rather than 3000).

use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::helpers::WAIT;

/// The recipe's lines, comments dropped.
fn recipe() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Private rooms and moderation").expect("the section")..];
    let block = section.lines().skip_while(|l| !l.starts_with("    ")).take_while(|l| l.starts_with("    "));
    block.map(|l| l.split(" # ").next().unwrap().trim().to_owned()).collect()
}

/// `'*'` as a shell passes it.
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(|w| w.trim_matches('\'').to_owned()).collect()
}

fn ssechat(dir: &std::path::Path, env: &[(String, String)], args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssechat"));
    command.args(args).current_dir(dir).envs(env.iter().cloned()).env_remove("SSECHAT_PASSWORD");
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_private_team_recipe_works_as_written() {
    let lines = recipe();
    assert_eq!(lines.len(), 5, "five commands: {lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = words(lines[0].strip_prefix("export ").expect("an export"))
        .iter()
        .map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap())
        .collect();
    for line in &lines[1..4] {
        let args = &words(line)[1..];
        let mut child = ssechat(dir.path(), &env, args).spawn().unwrap();
        let password = format!("{} pass\n", args.get(2).map_or("", String::as_str));
        child.stdin.take().unwrap().write_all(password.as_bytes()).await.unwrap();
        let output = tokio::time::timeout(WAIT, child.wait_with_output()).await.unwrap().unwrap();
        assert!(output.status.success(), "{line}: {}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(lines[4], "ssechat");
    env.push(("SSECHAT_LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    let mut server = ssechat(dir.path(), &env, &[]).spawn().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, stdout.read_line(&mut line)).await.unwrap().unwrap();
    let base = line.trim().strip_prefix("listening on ").expect("the server starts").to_owned();

    let client = reqwest::Client::new();
    let guest = client.get(format!("{base}/rooms/team")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(guest.status(), 401);
    assert!(guest.text().await.unwrap().contains("login?next="), "a link to sign in");
    let signed = client.post(format!("{base}/login")).json(&json!({"name": "ana", "password": "ana pass"}));
    assert_eq!(signed.send().await.unwrap().status(), 200);
    let posted = client
        .post(format!("{base}/send"))
        .basic_auth("bob", Some("bob pass"))
        .json(&json!({"room": "team", "text": "hi team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let history = client.get(format!("{base}/history?room=team")).basic_auth("ana", Some("ana pass"));
    let history: serde_json::Value = history.send().await.unwrap().json().await.unwrap();
    assert_eq!(history[0]["author"], "bob", "{history}");
}
