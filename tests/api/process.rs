//! The real binary as a child process, for crash, restart and start-up tests.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::WAIT;

pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts `ssechat` on a free port with `args`; panics if it does not come up.
    pub async fn start(args: &[&str]) -> Server {
        match Self::try_start(args).await {
            Ok(server) => server,
            Err(stderr) => panic!("ssechat did not start: {stderr}"),
        }
    }

    /// Starts `ssechat`, or returns what it printed on stderr when it exits instead.
    pub async fn try_start(args: &[&str]) -> Result<Server, String> {
        Self::try_start_on("127.0.0.1:0", args).await
    }

    /// Starts `ssechat` on `listen`, or returns what it printed on stderr.
    pub async fn try_start_on(listen: &str, args: &[&str]) -> Result<Server, String> {
        Self::spawn(listen, &["--send-rate", "1000000", "--send-burst", "1000000"], args, &[]).await
    }

    /// Starts `ssechat` as deployed with `args` and the environment variables `env` (the
    /// test's own `SSECHAT_*` are not passed on), or returns what it printed on stderr. It
    /// logs at `warn` unless `args` or `env` name a log filter.
    pub async fn try_start_with(args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        Self::spawn("127.0.0.1:0", &[], args, env).await
    }

    /// Stops it (SIGKILL) and returns all it wrote on stderr: everything logged before
    /// `listening on` is there.
    pub async fn stop_and_read_stderr(mut self) -> String {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
        stderr
    }

    /// Starts `ssechat` as it is deployed: the real send limits and stream caps, only `args`
    /// added. What it logs is read and dropped (a full pipe would stall it), or shown with
    /// `TEST_LOG`.
    pub async fn start_deployed(args: &[&str]) -> Server {
        let mut server = match Self::spawn("127.0.0.1:0", &[], args, &[]).await {
            Ok(server) => server,
            Err(stderr) => panic!("ssechat did not start: {stderr}"),
        };
        let mut stderr = server.child.stderr.take().unwrap();
        tokio::spawn(async move {
            if std::env::var_os("TEST_LOG").is_some() {
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::stderr()).await;
            } else {
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            }
        });
        server
    }

    /// Its process id, to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The address it listens on, as `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.base.split_once("://").map_or(&self.base, |(_, addr)| addr)
    }

    async fn spawn(
        listen: &str,
        limits: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let log_named = args.iter().any(|arg| arg.starts_with("--log"))
            || env.iter().any(|(name, _)| *name == "SSECHAT_LOG");
        let log = if log_named { &[][..] } else { &["--log", "warn"][..] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssechat"))
            .args(["--listen", listen])
            .args(log)
            .args(limits)
            .args(args)
            .env_clear()
            .envs(std::env::vars().filter(|(name, _)| !name.starts_with("SSECHAT_")))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(WAIT, stdout.read_line(&mut line)).await.expect("starts or exits").unwrap();
        match line.trim().strip_prefix("listening on ") {
            Some(base) => Ok(Server { child, base: base.to_owned() }),
            None => {
                let status = tokio::time::timeout(WAIT, child.wait()).await.expect("exits").unwrap();
                assert!(!status.success(), "a failed start exits non-zero");
                let mut stderr = String::new();
                child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
                Err(stderr)
            }
        }
    }

    /// SIGKILL: no shutdown code runs at all.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// A real `redis-server` on a free loopback port, killed on drop. With `persistent`, it
/// writes an append-only file with `appendfsync always` into its own directory, so a
/// restart on the same directory keeps everything acknowledged.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    pub fn start(persistent: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer {
            child: None,
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
            dir: tempfile::tempdir().unwrap(),
            persistent,
        };
        server.restart();
        server
    }

    /// Starts it (again) on the same port and directory, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill(); // never two on one port, nor one left running unowned
        let aof = if self.persistent {
            ["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            ["--appendonly", "no", "--appendfsync", "no"]
        };
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url.as_str()).unwrap();
        for _ in 0..1000 {
            let pong = client.get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// SIGSTOP: Redis keeps its connections and takes what is sent, but runs nothing, as a
    /// stalled server does.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: it goes on, running what was sent while it was stopped.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("redis-server is running").id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal} to redis-server");
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
