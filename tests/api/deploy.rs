//! Running it for real: the one test command (`scripts/test`), the systemd unit
//! (`deploy/ssechat.service`), and `ssechat backup` beside a running server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::accounts::cli;
use crate::helpers::{WAIT, eventually};
use crate::process::Server;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The programs `scripts/test` looks for (beside `cargo`).
const PROGRAMS: [&str; 6] =
    ["redis-server", "nginx", "chromium", "chromedriver", "pebble", "pebble-challtestsrv"];

/// A directory of stand-in programs, used as the whole `PATH`: each one only records its
/// arguments in `NAME.args`, so the script's choices are seen without installing or testing.
struct FakePath {
    dir: tempfile::TempDir,
}

impl FakePath {
    fn with(programs: &[&str]) -> Self {
        let fake = FakePath { dir: tempfile::tempdir().unwrap() };
        for name in programs {
            fake.add(name, "");
        }
        fake
    }

    /// Adds `name`, which runs `then` (sh) after recording its arguments.
    fn add(&self, name: &str, then: &str) {
        let path = self.dir.path().join(name);
        let record = self.dir.path().join(format!("{name}.args"));
        std::fs::write(&path, format!("#!/bin/sh\necho \"$*\" >> '{}'\n{then}\n", record.display())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What `name` was called with, one line per call; empty if it never ran.
    fn calls(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.args"))).unwrap_or_default()
    }

    /// Runs `bash scripts/test ARGS` with only these programs on `PATH`; (succeeded, stderr).
    async fn run_script(&self, args: &[&str]) -> (bool, String) {
        let output = tokio::process::Command::new(which("bash").expect("bash is on PATH"))
            .arg(Path::new(ROOT).join("scripts/test"))
            .args(args)
            .env_clear()
            .env("PATH", self.dir.path())
            .output();
        let output = tokio::time::timeout(WAIT, output).await.expect("scripts/test ends").unwrap();
        (output.status.success(), String::from_utf8(output.stderr).unwrap())
    }
}

/// Where `name` is on this process's `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Every program but `absent`, and cargo.
fn all_but(absent: &str) -> FakePath {
    let mut programs: Vec<&str> = PROGRAMS.iter().copied().filter(|p| *p != absent).collect();
    programs.push("cargo");
    FakePath::with(&programs)
}

#[tokio::test]
async fn the_test_command_checks_then_runs_cargo_test_with_its_arguments() {
    let fake = all_but("none");
    let (ok, said) = fake.run_script(&["--check"]).await;
    assert!(ok && said.contains("every program the tests need is installed"), "{said}");
    assert_eq!(fake.calls("cargo"), "", "--check runs no test");

    let (ok, said) = fake.run_script(&["tls::", "--", "--nocapture"]).await;
    assert!(ok, "{said}");
    assert_eq!(fake.calls("cargo"), "test tls:: -- --nocapture\n");
}

#[tokio::test]
async fn the_test_command_names_what_is_missing_and_runs_no_test() {
    let fake = all_but("chromedriver");
    let (ok, said) = fake.run_script(&["--check"]).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("missing: chromedriver") && said.contains("apt-get install chromium-driver"),
        "{said}"
    );

    // No apt-get: not Debian; it says which programs to install, and stops.
    let (ok, said) = fake.run_script(&[]).await;
    assert!(!ok && said.contains("missing: chromedriver. This is no Debian/Ubuntu system"), "{said}");
    assert_eq!(fake.calls("cargo"), "", "no half run");
}

#[tokio::test]
async fn the_test_command_installs_what_is_missing_with_apt_get() {
    let fake = all_but("pebble-challtestsrv");
    fake.add("chromedriver", "");
    // A sudo that needs no password, for when the test does not run as root.
    fake.add(
        "sudo",
        r#"[ "$1" = -n ] && shift; [ "$1" = true ] && exit 0; [ "$1" = env ] && shift 2; exec "$@""#,
    );
    fake.add("apt-get", "");
    let (ok, said) = fake.run_script(&[]).await;
    assert_eq!(fake.calls("apt-get"), "update -qq\ninstall -y -qq pebble\n", "{said}");
    // This apt-get installs nothing: it says so, and runs no test.
    assert!(!ok && said.contains("still missing after apt-get install: pebble-challtestsrv"), "{said}");
    assert_eq!(fake.calls("cargo"), "");
}

/// The README names one test command first, and `.ci/run` runs exactly that command.
#[test]
fn the_readme_and_ci_run_the_one_test_command() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let tests = readme.split_once("Run the tests").expect("README.md says how to run the tests").1;
    let first = tests.lines().find(|l| l.starts_with("    ")).map(str::trim);
    assert_eq!(first, Some("scripts/test"), "the README's first test command");
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
    let commands: Vec<&str> = ci.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(commands.contains(&"scripts/test"), ".ci/run runs scripts/test");
    assert!(!commands.iter().any(|l| l.starts_with("cargo test") || l.contains("apt-get")), "{ci}");
}

/// `deploy/ssechat.service`, and its `KEY=VALUE` lines.
fn unit() -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/ssechat.service")).unwrap();
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (text, lines)
}

#[test]
fn the_systemd_unit_has_its_keys_and_systemd_accepts_it() {
    let (text, lines) = unit();
    let has = |key: &str, value: &str| lines.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "ssechat"),
        ("WorkingDirectory", "/var/lib/ssechat"),
        ("Environment", "SSECHAT_STORE=sqlite:/var/lib/ssechat/ssechat.db"),
        ("LimitNOFILE", "1048576"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert!(has(key, value), "deploy/ssechat.service lacks {key}={value}");
    }
    let Some(analyze) = which("systemd-analyze") else { return };
    // verify checks that ExecStart's program exists: a copy that starts the binary built here.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ssechat.service");
    let exec = format!("ExecStart={}", env!("CARGO_BIN_EXE_ssechat"));
    let text: Vec<&str> = text.lines().map(|l| if l.starts_with("ExecStart=") { &exec } else { l }).collect();
    std::fs::write(&copy, text.join("\n")).unwrap();
    let output = std::process::Command::new(analyze).arg("verify").arg(&copy).output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    let about_it: Vec<&str> = said.lines().filter(|l| l.contains("ssechat")).collect();
    assert!(output.status.success() && about_it.is_empty(), "systemd-analyze verify: {said}");
}

#[tokio::test]
async fn the_server_starts_with_the_units_settings() {
    let (_, lines) = unit();
    let (_, help, _) = cli("memory", None, &["--help"]).await;
    let state = tempfile::tempdir().unwrap();
    let mut env = Vec::new();
    for (_, setting) in lines.iter().filter(|(k, _)| k == "Environment") {
        let (name, value) = setting.split_once('=').unwrap();
        let named = [format!("env: {name}="), format!("env: {name}]")];
        assert!(named.iter().any(|n| help.contains(n)), "{name} is no variable of ssechat's");
        let value = value.replace("/var/lib/ssechat", state.path().to_str().unwrap());
        env.push((name.to_owned(), value));
    }
    let exec = lines.iter().find(|(k, _)| k == "ExecStart").map(|(_, v)| v.as_str()).unwrap();
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"))
        .args(args)
        .envs(env)
        .env("SSECHAT_LISTEN", "127.0.0.1:0")
        .current_dir(state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    tokio::time::timeout(WAIT, stdout.read_line(&mut line)).await.expect("it starts").unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    assert!(state.path().join("ssechat.db").is_file(), "history goes into the state directory");
}

async fn post(base: &str, room: &str, text: &str) -> Value {
    let sent = reqwest::Client::new()
        .post(format!("{base}/send"))
        .json(&json!({ "room": room, "author": "zoe", "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    sent.json().await.unwrap()
}

async fn history(base: &str, room: &str) -> Vec<Value> {
    let url = format!("{base}/history?room={room}&since=0&limit=1000");
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Posts to room `busy` until `stop`; returns every message acknowledged.
fn keep_posting(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut sent = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            sent.push(post(&base, "busy", &format!("busy {}", sent.len())).await);
        }
        sent
    })
}

#[tokio::test]
async fn a_backup_taken_while_the_server_writes_serves_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("chat.db").display());
    let server = Server::start(&["--store", &store]).await;
    let (ok, _, err) = cli(&store, Some("ana pass"), &["user", "add", "ana"]).await;
    assert!(ok, "{err}");
    for n in 0..30 {
        post(&server.base, if n % 3 == 0 { "other" } else { "general" }, &format!("hello {n}")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let posting = keep_posting(server.base.clone(), Arc::clone(&stop));
    eventually("posts under way", || async { !history(&server.base, "busy").await.is_empty() }).await;

    let backup = dir.path().join("backup.db");
    let (ok, said, err) = cli(&store, None, &["backup", backup.to_str().unwrap()]).await;
    stop.store(true, Ordering::SeqCst);
    let busy = posting.await.unwrap();
    assert!(ok, "{err}");
    let size = std::fs::metadata(&backup).unwrap().len();
    let wrote = format!("wrote {}: {size} bytes, ", backup.display());
    assert!(said.starts_with(&wrote) && said.trim_end().ends_with("messages in 3 rooms, 1 user"), "{said}");

    let copy = Server::start(&["--store", &format!("sqlite:{}", backup.display())]).await;
    for room in ["general", "other"] {
        assert_eq!(history(&copy.base, room).await, history(&server.base, room).await, "#{room}");
    }
    // A consistent snapshot: the busy room as it was at one moment, with nothing missing.
    let copied = history(&copy.base, "busy").await;
    assert!(!copied.is_empty() && copied.len() <= busy.len());
    assert_eq!(copied[..], busy[..copied.len()]);

    let signed_in = reqwest::Client::new()
        .post(format!("{}/send", copy.base))
        .basic_auth("ana", Some("ana pass"))
        .json(&json!({ "room": "general", "text": "restored" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 201);
    assert_eq!(signed_in.json::<Value>().await.unwrap()["user"], true);
}

#[tokio::test]
async fn a_backup_never_overwrites_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("chat.db").display());
    let server = Server::start(&["--store", &store]).await;
    post(&server.base, "general", "hi").await;
    let taken = dir.path().join("taken.db");
    std::fs::write(&taken, "precious").unwrap();
    let refused = |target: PathBuf, store: String, wanted: &'static [&'static str]| async move {
        let (ok, _, err) = cli(&store, None, &["backup", target.to_str().unwrap()]).await;
        assert!(!ok && wanted.iter().all(|w| err.contains(w)), "{err}");
    };
    refused(taken.clone(), store.clone(), &["already exists", "never overwrites"]).await;
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "precious");
    let nowhere = dir.path().join("no/such/dir/b.db");
    refused(nowhere.clone(), store.clone(), &["does not exist"]).await;
    let missing = format!("sqlite:{}", dir.path().join("none.db").display());
    refused(dir.path().join("b.db"), missing, &["no history database"]).await;
    assert!(!dir.path().join("none.db").exists() && !dir.path().join("b.db").exists());
    refused(dir.path().join("b.db"), "memory".into(), &["memory store", "--store sqlite:"]).await;
    refused(dir.path().join("b.db"), "redis://127.0.0.1:1/0".into(), &["BGSAVE", "dump.rdb"]).await;
    refused(dir.path().join("b.db"), "redis+cluster://127.0.0.1:1".into(), &["BGSAVE", "dump.rdb"]).await;
    assert!(!dir.path().join("b.db").exists());
}
