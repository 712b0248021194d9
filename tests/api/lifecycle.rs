//! Starting and stopping: the binary's contract, and shutdown with open streams.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{TestApp, WAIT};

#[tokio::test]
async fn shutdown_ends_open_streams_and_run_returns() {
    let app = TestApp::spawn().await;
    let mut streams = Vec::new();
    for i in 0..200 {
        let room = format!("room{}", i % 7);
        streams.push(app.subscribe(&format!("?room={room}"), &[]).await);
    }
    app.stop().await;
    for stream in &mut streams {
        stream.expect_end().await;
    }
}

#[test]
fn help_documents_every_flag_and_its_env_var() {
    let output = Command::new(env!("CARGO_BIN_EXE_ssechat")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--store",
        "--history",
        "--heartbeat",
        "--retry",
        "--buffer",
        "--shutdown-timeout",
        "--log",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let flags = help.lines().filter(|l| l.trim_start().starts_with("--")).count();
    let envs = help.matches("[env: SSECHAT_").count();
    assert!(flags >= 8, "{help}");
    assert_eq!(envs, flags, "every flag has an env var:\n{help}");
}

/// The real binary: one line on stdout with the real address, then SIGTERM with streams open.
#[tokio::test]
async fn the_binary_prints_its_address_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssechat"))
        .env("SSECHAT_LISTEN", "127.0.0.1:0")
        .env("SSECHAT_STORE", "memory")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").expect(&line).to_owned();
    assert!(!addr.ends_with(":0"), "the real port: {addr}");

    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().text().await.unwrap(), "ok");
    let mut streams = Vec::new();
    for _ in 0..50 {
        let response = client.get(format!("{base}/events")).send().await.unwrap();
        streams.push(crate::helpers::EventStream::new(response));
    }
    for stream in &mut streams {
        stream.next_block().await.unwrap();
    }

    let started = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    for stream in &mut streams {
        stream.expect_end().await;
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < WAIT, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "exactly one line on stdout");
}
