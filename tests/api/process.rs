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
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssechat"))
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .args(args)
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
