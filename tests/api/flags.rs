//! The command line and the logs, from the real binary: a bad value stops the start with a
//! message naming the flag or the variable it came from; what runs is logged at start.

use serde_json::Value;
use ssechat::config::StoreUrl;

use crate::helpers::TestApp;
use crate::process::{RedisServer, Server};

/// Starts the binary with `args` and `env`, expecting a refusal; returns its stderr.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    match Server::try_start_with(args, env).await {
        Ok(server) => panic!("started with {args:?} {env:?}: {}", server.stop_and_read_stderr().await),
        Err(stderr) => stderr,
    }
}

#[tokio::test]
async fn bad_values_are_refused_under_the_flag_or_the_variable_they_came_from() {
    let cases = [
        ("cors-origin", "not a url", "is not an origin like https://chat.example"),
        ("cors-origin", "https://a.example/chat", "an origin has no path"),
        ("cors-origin", "https://user@a.example", "no user name or password"),
        ("send-rate", "0", "is not a rate per second above zero"),
        ("send-rate", "-1", "is not a rate per second above zero"),
        ("send-rate", "NaN", "is not a rate per second above zero"),
        ("send-rate", "inf", "is not a rate per second above zero"),
        ("send-burst", "0", "is not a whole number from 1 to"),
        ("typing-rate", "0", "is not a rate per second above zero"),
        ("typing-burst", "0", "is not a whole number from 1 to"),
        ("log", "bad[filter", "is not a log filter like info"),
        ("heartbeat", "soon", "is not a duration like 15s or 2m"),
        ("coalesce", "soon", "is not a duration like 15s or 2m"),
        ("presence-grace", "soon", "is not a duration like 15s or 2m"),
        ("drain-timeout", "soon", "is not a duration like 15s or 2m"),
        ("shutdown-timeout", "soon", "is not a duration like 15s or 2m"),
        ("edit-window", "soon", "is not a duration like 15s or 2m"),
    ];
    for (flag, value, why) in cases {
        let var = format!("SSECHAT_{}", flag.to_uppercase().replace('-', "_"));
        let as_flag = refused(&[&format!("--{flag}={value}")], &[]).await;
        assert!(as_flag.contains(&format!("invalid value '{value}' for '--{flag} <")), "{as_flag}");
        assert!(as_flag.contains(why), "--{flag}: {as_flag}");
        let as_var = refused(&[], &[(&var, value)]).await;
        assert!(as_var.contains(&format!("invalid value '{value}' for '{var} (--{flag})'")), "{as_var}");
        assert!(as_var.contains(why), "{var}: {as_var}");
    }
}

#[tokio::test]
async fn boolean_variables_take_one_and_zero_yes_and_no_on_and_off() {
    let deprecated = "--trust-proxy (SSECHAT_TRUST_PROXY) is deprecated";
    for yes in ["1", "true", "yes", "ON", "True"] {
        let server =
            Server::try_start_with(&["--store", "memory"], &[("SSECHAT_TRUST_PROXY", yes)]).await.unwrap();
        let stderr = server.stop_and_read_stderr().await;
        assert!(stderr.contains(deprecated), "{yes} means yes: {stderr}");
    }
    for no in ["0", "false", "no", "Off"] {
        let server =
            Server::try_start_with(&["--store", "memory"], &[("SSECHAT_TRUST_PROXY", no)]).await.unwrap();
        let stderr = server.stop_and_read_stderr().await;
        assert!(!stderr.contains(deprecated), "{no} means no: {stderr}");
    }
    let bad = refused(&[], &[("SSECHAT_TRUST_PROXY", "maybe")]).await;
    assert!(bad.contains("for 'SSECHAT_TRUST_PROXY (--trust-proxy)'"), "{bad}");
    assert!(bad.contains("\"maybe\" is not one of 1 or 0, true or false, yes or no, on or off"), "{bad}");
}

#[tokio::test]
async fn logs_in_a_pipe_have_no_colour() {
    let server = Server::try_start_with(&["--store", "memory", "--trust-proxy"], &[]).await.unwrap();
    let stderr = server.stop_and_read_stderr().await;
    assert!(stderr.contains("--trust-proxy (SSECHAT_TRUST_PROXY) is deprecated"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "no ANSI escapes in a pipe: {stderr:?}");
}

#[tokio::test]
async fn the_start_logs_the_store_retention_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let store = format!("sqlite:{}", db.display());
    let args = ["--log", "info", "--store", &store, "--retain", "1", "--retain-for", "7d"];
    let limits = ["--max-streams", "7", "--max-streams-per-client", "1", "--max-connections", "50"];
    let limits = [&limits[..], &["--max-connections-per-client", "9", "--send-rate", "0.5"]].concat();
    let server = Server::try_start_with(&[&args[..], &limits].concat(), &[]).await.unwrap();
    let stderr = server.stop_and_read_stderr().await;
    assert!(stderr.contains(&format!("store: {store}\n")), "{stderr}");
    assert!(stderr.contains("retention: 1 message per room, for at most 7days\n"), "{stderr}");
    let limits = "limits: 7 open streams (1 per client), 50 open connections (9 per client), \
                  0.5 sends/s per client (bursts of 30), 2 typing signals/s per client (bursts of 10)\n";
    assert!(stderr.contains(limits), "{stderr}");
}

#[tokio::test]
async fn the_start_log_names_redis_without_its_password() {
    let redis = RedisServer::start(false);
    let mut admin = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    redis::cmd("CONFIG").arg(&["SET", "requirepass", "hunter2"]).exec(&mut admin).unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", redis.port);
    let server = Server::try_start_with(&["--log", "info", "--store", &url], &[]).await.unwrap();
    let stderr = server.stop_and_read_stderr().await;
    assert!(stderr.contains(&format!("store: redis://:***@127.0.0.1:{}/0\n", redis.port)), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("retention: 10000 messages per room, of any age\n"), "{stderr}");
}

#[tokio::test]
async fn reads_during_a_redis_outage_say_the_store_is_unavailable_not_that_nothing_was_saved() {
    let mut redis = RedisServer::start(false);
    let url = redis.url.clone();
    let app = TestApp::spawn_with(move |c| c.store = StoreUrl::Redis(url)).await;
    app.say("general", "ana", "hi").await;
    redis.kill();
    for path in ["/history?room=general", "/rooms", "/rooms/general/presence"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 503, "{path}");
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert_eq!(error, ssechat::error::STORE_UNAVAILABLE, "{path}");
    }
    for path in ["/", "/rooms/general"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 503, "{path}");
        let page = response.text().await.unwrap();
        assert!(page.contains("try again in a moment") && !page.contains("saved"), "{path}: {page}");
    }
    let events = app.client.get(app.url("/events?room=general")).send().await.unwrap();
    assert_eq!(events.status(), 503);
    let body: Value = events.json().await.unwrap();
    assert_eq!(body["error"], ssechat::error::STORE_UNAVAILABLE);
    let sent = app.post_json(serde_json::json!({ "room": "general", "author": "ana", "text": "hi" })).await;
    assert_eq!(sent.status(), 503);
    let body: Value = sent.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nothing was saved, please retry"), "{body}");
}

#[tokio::test]
async fn help_names_each_variable_without_a_trailing_equals_sign() {
    for env in [&[][..], &[("SSECHAT_LISTEN", "127.0.0.1:0")][..]] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechat"))
            .arg("--help")
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(help.contains("[env: SSECHAT_LISTEN]"), "{help}");
        assert!(!help.contains("=]") && !help.contains("SSECHAT_LISTEN="), "{help}");
    }
}
