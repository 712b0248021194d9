//! The real binary on a Redis Cluster (`--store redis+cluster://HOST:PORT[,HOST:PORT...]`):
//! servers and commands start on one, `redis://` at a Cluster node is refused naming the
//! flag to use, and seeds that do not answer are a clear error in bounded time.

use std::time::{Duration, Instant};

use serde_json::json;
use ssechat::domain::Message;

use crate::accounts::cli;
use crate::helpers::EventStream;
use crate::process::{RedisServer, Server};
use crate::redis_cluster::RedisCluster;

/// `--store` for `cluster`, named by the nodes on `ports`.
fn cluster_store(ports: &[u16]) -> String {
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("redis+cluster://{}", nodes.join(","))
}

/// Posts to `rooms` through `from` while one stream per room reads on `to`: each stream gets
/// its room's message, over real HTTP and SSE.
pub async fn delivered_across(from: &str, to: &str, rooms: &[&str]) {
    let client = reqwest::Client::new();
    for room in rooms {
        let response = client.get(format!("{to}/events?room={room}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = EventStream::new(response);
        let body = json!({ "room": room, "author": "ana", "text": format!("hello {room}") });
        let sent = client.post(format!("{from}/send")).json(&body).send().await.unwrap();
        assert_eq!(sent.status(), 201, "{room}");
        let sent: Message = sent.json().await.unwrap();
        assert_eq!(stream.next_message().await, sent, "{room}: posted on {from}, read on {to}");
    }
}

#[tokio::test]
async fn nodes_on_a_redis_cluster_deliver_across_nodes_and_log_the_cluster() {
    let cluster = RedisCluster::start().await;
    let ports = cluster.live_ports();
    // Each node knows the Cluster by other seeds.
    let (store_a, store_b) = (cluster_store(&ports[..2]), cluster_store(&ports[3..]));
    let a = Server::start(&["--store", &store_a, "--log", "info"]).await;
    let b = Server::start(&["--store", &store_b]).await;
    // Rooms whose keys land on different primaries, most likely all three.
    delivered_across(&a.base, &b.base, &["general", "dev", "ops", "random"]).await;
    delivered_across(&b.base, &a.base, &["general"]).await;
    let logged = a.stop_and_read_stderr().await;
    assert!(logged.contains(&format!("store: {store_a}\n")), "{logged}");
}

/// Cluster mode is what `redis+cluster://` says, never guessed: `redis://` at a Cluster node
/// would half work (keys of other shards answer MOVED), so it stops, naming the flag to use.
#[tokio::test]
async fn a_redis_url_at_a_cluster_node_is_refused_naming_the_cluster_flag() {
    let cluster = RedisCluster::start().await;
    let port = cluster.live_ports()[0];
    let url = format!("redis://127.0.0.1:{port}/0");
    let err = Server::try_start(&["--store", &url]).await.err().unwrap();
    let wanted = format!("--store redis+cluster://127.0.0.1:{port}");
    assert!(err.contains(&url) && err.contains("Redis Cluster") && err.contains(&wanted), "{err}");
    // Commands too.
    let (ok, _, err) = cli(&url, None, &["user", "list"]).await;
    assert!(!ok && err.contains(&wanted), "{err}");
}

#[tokio::test]
async fn a_cluster_url_at_a_redis_without_cluster_mode_says_to_use_redis_url() {
    let redis = RedisServer::start(false);
    let store = cluster_store(&[redis.port]);
    let err = Server::try_start(&["--store", &store]).await.err().unwrap();
    assert!(err.contains(&store) && err.contains("not in cluster mode") && err.contains("redis://"), "{err}");
}

/// One seed refuses connections, the other accepts them and never answers: start-up gives up
/// within its bound (5 s; 20 s only a hung start misses), naming every seed.
#[tokio::test]
async fn unreachable_cluster_seeds_stop_the_server_naming_them() {
    let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let store = cluster_store(&[refusing, silent.local_addr().unwrap().port()]);
    let started = Instant::now();
    let err = Server::try_start(&["--store", &store]).await.err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "gave up after {:?}", started.elapsed());
    assert!(err.contains(&format!("cannot reach Redis at {store}")), "{err}");
}

/// The account and token commands on a Cluster, beside a server on it (the suite every store
/// passes, `accounts.rs`).
#[tokio::test]
async fn account_commands_work_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    crate::accounts::commands_work_beside_a_server(&cluster_store(&cluster.live_ports()[..2])).await;
}

/// `deploy/redis-cluster.sh` (the README's recipe) on `ports`, in `dir`; stopped on drop.
struct Recipe {
    dir: tempfile::TempDir,
}

impl Recipe {
    /// Runs the script with `args`; (succeeded, stdout and stderr).
    fn run(args: &[&str]) -> (bool, String) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/redis-cluster.sh");
        let output = std::process::Command::new(script).args(args).output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
        (output.status.success(), said.into_owned())
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// `start DIR PORT...`; the `--store` value it prints.
    async fn start(&self, ports: &[u16]) -> String {
        let mut args = vec!["start".to_owned(), self.dir().to_owned()];
        args.extend(ports.iter().map(u16::to_string));
        let run = tokio::task::spawn_blocking(move || {
            Self::run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        });
        let (ok, said) =
            tokio::time::timeout(Duration::from_secs(60), run).await.expect("start ends").unwrap();
        assert!(ok, "{said}");
        let store = said.lines().find_map(|l| l.trim().strip_prefix("--store ")).expect("prints --store");
        store.to_owned()
    }

    fn stop(&self) -> (bool, String) {
        Self::run(&["stop", self.dir()])
    }
}

impl Drop for Recipe {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Six free loopback ports whose cluster bus ports (PORT+10000) are free too, below the
/// range the kernel hands out for port 0, so nothing else takes them meanwhile.
fn ports_with_bus() -> Vec<u16> {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 10_000 + (std::process::id() % 12_000) as u16;
    let ports: Vec<u16> =
        (start..22_767).chain(10_000..start).filter(|&p| free(p) && free(p + 10_000)).take(6).collect();
    assert_eq!(ports.len(), 6, "free ports for a Redis Cluster");
    ports
}

/// The README's recipe: a local 3+3 Cluster from `deploy/redis-cluster.sh`, two nodes on the
/// `--store` it prints, messages across them; stopped, started again: the history is back;
/// and `stop` does not leave a node behind that ignores SIGTERM.
#[tokio::test]
async fn the_redis_cluster_recipe_runs_a_cluster_two_nodes_share() {
    let _turn = crate::redis_cluster::ClusterTurn::take().await;
    let ports = ports_with_bus();
    let recipe = Recipe { dir: tempfile::tempdir().unwrap() };
    let store = recipe.start(&ports).await;
    assert_eq!(store, cluster_store(&ports[..3]));
    for port in &ports {
        let info: String =
            crate::redis_cluster::node_query(*port, redis::cmd("CONFIG").arg("GET").arg("appendfsync"))
                .await
                .map(|pair: Vec<String>| pair.join(" "))
                .unwrap();
        assert_eq!(info, "appendfsync always", "node {port}");
    }
    let (a, b) = (Server::start(&["--store", &store]).await, Server::start(&["--store", &store]).await);
    delivered_across(&a.base, &b.base, &["general", "dev", "ops"]).await;
    let history = |base: String| async move {
        let url = format!("{base}/history?room=general&since=0");
        reqwest::get(url).await.unwrap().json::<Vec<Message>>().await.unwrap()
    };
    let kept = history(b.base.clone()).await;
    assert_eq!(kept.len(), 1);
    drop((a, b));

    let (ok, said) = recipe.stop();
    assert!(ok && said.contains("stopped"), "{said}");
    for port in &ports {
        let gone = crate::redis_cluster::node_query::<String>(*port, &redis::cmd("PING")).await;
        assert!(gone.is_err(), "node {port} stopped");
    }
    assert_eq!(recipe.start(&ports).await, store, "started again on the same directory");
    let c = Server::start(&["--store", &store]).await;
    assert_eq!(history(c.base.clone()).await, kept, "the history is back");
    drop(c);

    // A node that ignores SIGTERM (Redis will not exit when its shutdown save fails) gets
    // SIGKILL: in its place in the pid file, a shell that ignores SIGTERM.
    let pidfile = recipe.dir.path().join(ports[0].to_string()).join("redis.pid");
    let node = std::fs::read_to_string(&pidfile).unwrap();
    assert!(std::process::Command::new("kill").args(["-9", node.trim()]).status().unwrap().success());
    let mut stubborn = std::process::Command::new("sh")
        .args(["-c", "trap '' TERM; while :; do sleep 1; done"])
        .spawn()
        .unwrap();
    std::fs::write(&pidfile, stubborn.id().to_string()).unwrap();
    let (ok, said) = recipe.stop();
    assert!(ok && said.contains("sending SIGKILL") && said.contains("stopped"), "{said}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(stubborn.wait().unwrap().signal(), Some(9), "killed");
}

/// The README's Redis Cluster block is the recipe tested above: the script started and
/// stopped on one directory, and nodes on the `--store` it prints for those ports.
#[test]
fn the_readmes_cluster_block_is_the_tested_recipe() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n### One Redis or a Redis Cluster\n").nth(1).expect("the section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```\n").next()).expect("a sh block");
    let start = block.lines().find(|l| l.starts_with("deploy/redis-cluster.sh start ")).expect("a start");
    let words: Vec<&str> = start.split_whitespace().collect();
    let ports: Vec<u16> = words[3..].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(ports.len(), 6, "{start}");
    let nodes: Vec<&str> = block.lines().filter(|l| l.contains("ssechat --listen")).collect();
    assert_eq!(nodes.len(), 2, "{block}");
    for node in nodes {
        assert!(node.contains(&format!("--store {} ", cluster_store(&ports[..3]))), "{node}");
    }
    assert!(block.contains(&format!("deploy/redis-cluster.sh stop {}", words[2])), "{block}");
}
