//! The processes behind a server under test: where the programs are, each
//! server's command line, the Apache Kafka brokers of a Weft cluster, and
//! the waits, bounded in time, for a process to be ready.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period while waiting for readiness (a timer, not a stand-in for an
/// event: a process that has not bound yet offers nothing to await).
pub(crate) const READY_POLL: Duration = Duration::from_millis(50);

/// Where the programs are.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    pub(crate) weft: PathBuf,
    pub(crate) node: PathBuf,
    pub(crate) peers_dir: PathBuf,
    /// The Apache Kafka launcher (tests/kafka/kafka.sh), for Weft's
    /// cluster runs.
    pub(crate) kafka: Option<PathBuf>,
    pub(crate) redis_server: Option<PathBuf>,
    /// Weft's `--kafka-fetch-wait-ms` in cluster runs; `None` keeps Weft's
    /// default.
    pub(crate) kafka_fetch_wait_ms: Option<u32>,
    /// Extra arguments of every `weft serve` (a scenario's own settings,
    /// such as scenario 6's short unload grace).
    pub(crate) weft_extra_args: Vec<String>,
}

/// Apache Kafka brokers started by the launcher in a directory of their
/// own. They are not this process's children (the launcher detaches them),
/// so they are stopped through the launcher, by the pids it recorded.
#[derive(Debug)]
pub(crate) struct Brokers {
    launcher: PathBuf,
    dir: PathBuf,
}

impl Brokers {
    /// Formats and starts `count` brokers (1 or 3) in `dir`; returns them
    /// and their bootstrap servers. The launcher waits for every broker to
    /// serve clients, bounded in time.
    pub(crate) fn start(
        launcher: &Path,
        dir: &Path,
        count: usize,
    ) -> anyhow::Result<(Brokers, String)> {
        let brokers = Brokers {
            launcher: launcher.to_owned(),
            dir: dir.to_owned(),
        };
        let output = Command::new(launcher)
            .arg("up")
            .arg(dir)
            .arg(count.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("run {}", launcher.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "starting {count} Kafka broker(s) failed ({}); logs under {}",
            output.status,
            dir.display()
        );
        let bootstrap = String::from_utf8(output.stdout)
            .context("bootstrap servers")?
            .trim()
            .to_owned();
        Ok((brokers, bootstrap))
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        let _stopped = Command::new(&self.launcher)
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
    }
}

/// A free port on 127.0.0.1 (bound and released; the server binds it next).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr().context("local addr")?.port())
}

/// `port` on 127.0.0.1.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Spawns `command` with its stdout and stderr going to the file `log`.
pub(crate) fn spawn_logged(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone().context("clone log handle")?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {command:?}"))
}

/// Weft with the limits that would otherwise refuse a load test from one
/// host (per-address sessions and upgrades, per-session update rate).
pub(crate) fn weft_command(
    programs: &Programs,
    work_dir: &Path,
    port: u16,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(&programs.weft);
    let store = format!("sqlite://{}", work_dir.join("store/weft.db").display());
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", &store])
        .args(["--max-connections", "100000"])
        .args(["--max-connections-per-ip", "100000"])
        .args(["--max-upgrades-per-ip-per-second", "100000"])
        .args(["--max-updates-per-second", "0"])
        .args(["--log", "warn"])
        .args(extra)
        .args(&programs.weft_extra_args);
    command
}

/// `@y/websocket-server` on `port`.
pub(crate) fn y_websocket_command(programs: &Programs, port: u16) -> Command {
    let mut command = Command::new(&programs.node);
    command
        .arg(
            programs
                .peers_dir
                .join("node_modules/@y/websocket-server/src/server.js"),
        )
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string());
    command
}

/// Hocuspocus (bench/peers/hocuspocus.mjs) on `port` as node `node`, with
/// the Redis extension when given `redis_port`.
pub(crate) fn hocuspocus_command(
    programs: &Programs,
    port: u16,
    redis_port: Option<u16>,
    node: &str,
) -> Command {
    let mut command = Command::new(&programs.node);
    command
        .arg(programs.peers_dir.join("hocuspocus.mjs"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("NODE_NAME", node);
    if let Some(redis_port) = redis_port {
        command.env("REDIS_PORT", redis_port.to_string());
    }
    command
}

/// Waits until `addr` accepts a TCP connection; `check_alive` fails the
/// wait if the server's processes have exited.
pub(crate) fn wait_tcp(
    addr: SocketAddr,
    mut check_alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        check_alive()?;
        if TcpStream::connect_timeout(&addr, READY_POLL).is_ok() {
            return Ok(());
        }
        std::thread::sleep(READY_POLL);
    }
    bail!("{addr} did not accept within {READY_TIMEOUT:?}")
}

/// Waits until Weft at `addr` answers `/readyz` with 200; `check_alive`
/// fails the wait if the server's processes have exited.
pub(crate) fn wait_weft_ready(
    addr: SocketAddr,
    mut check_alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        check_alive()?;
        if http_status(addr, "/readyz").ok() == Some(200) {
            return Ok(());
        }
        std::thread::sleep(READY_POLL);
    }
    bail!("weft at {addr} not ready within {READY_TIMEOUT:?}")
}

/// The status code of a plain `GET` (enough HTTP for a readiness probe).
fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, READY_POLL)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head)?;
    let text = std::str::from_utf8(&head[9..12])?;
    Ok(text.parse()?)
}
