//! Starting and stopping the servers under test, each fresh for every run.
//!
//! Every server listens on a free port of 127.0.0.1, writes its log to the
//! run's work directory, and is killed (by its own pid) when the
//! [`RunningServer`] is dropped. Readiness is awaited, bounded in time:
//! Weft's `/readyz` (which in cluster mode also means the broker answered),
//! a TCP accept for the others. The command lines, the Kafka brokers and
//! the waits are in [`crate::processes`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::{Dialect, Endpoint};
use crate::processes::{
    Brokers, Programs, READY_POLL, free_port, hocuspocus_command, loopback, spawn_logged, wait_tcp,
    wait_weft_ready, weft_command, y_websocket_command,
};

/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The servers measured.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
pub(crate) enum ServerKind {
    /// One Weft node, embedded SQLite store.
    Weft,
    /// Two Weft nodes over one Apache Kafka broker.
    WeftCluster,
    /// Two Weft nodes over a three-broker Apache Kafka cluster: topics
    /// replicated three times, `min.insync.replicas=2`, so every
    /// acknowledged update is on two brokers at least.
    WeftClusterReplicated,
    /// `@y/websocket-server`, the reference server (no clustering).
    YWebsocket,
    /// One `@hocuspocus/server` node.
    Hocuspocus,
    /// Two `@hocuspocus/server` nodes with `@hocuspocus/extension-redis`.
    HocuspocusRedis,
}

impl ServerKind {
    /// The name used in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ServerKind::Weft => "Weft",
            ServerKind::WeftCluster => "Weft (2 nodes, Kafka)",
            ServerKind::WeftClusterReplicated => "Weft (2 nodes, Kafka RF 3)",
            ServerKind::YWebsocket => "y-websocket-server",
            ServerKind::Hocuspocus => "Hocuspocus",
            ServerKind::HocuspocusRedis => "Hocuspocus + Redis (2 nodes)",
        }
    }

    /// Whether this is Weft (the numerator of every ratio).
    pub(crate) fn is_weft(self) -> bool {
        matches!(
            self,
            ServerKind::Weft | ServerKind::WeftCluster | ServerKind::WeftClusterReplicated
        )
    }
}

/// A started server: its client endpoints and the pids whose CPU and memory
/// the scenario reads (the serving processes, not brokers).
#[derive(Debug)]
pub(crate) struct RunningServer {
    kind: ServerKind,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) server_pids: Vec<u32>,
    children: Vec<Child>,
    /// The Kafka brokers of a Weft cluster, stopped after its nodes.
    brokers: Option<Brokers>,
    work_dir: PathBuf,
    /// Keep the work directory (logs) after the server stops.
    keep_work_dir: bool,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Servers first, then the services they use.
        for child in self.children.iter_mut().rev() {
            let _already_gone = child.kill();
            let _reaped = child.wait();
        }
        if !self.keep_work_dir {
            let _leftover = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// Starts `kind` fresh in a new directory under `scratch`.
pub(crate) fn start(
    kind: ServerKind,
    programs: &Programs,
    scratch: &Path,
) -> anyhow::Result<RunningServer> {
    let work_dir = scratch.join(format!("{kind:?}-{}", crate::clock::nanos()));
    let mut server = RunningServer::empty(kind, &work_dir)?;
    if let Err(error) = launch(kind, programs, &work_dir, &mut server) {
        let logs = server.keep_logs().display().to_string();
        return Err(error.context(format!("start {} (logs in {logs})", kind.label())));
    }
    Ok(server)
}

fn launch(
    kind: ServerKind,
    programs: &Programs,
    work_dir: &Path,
    server: &mut RunningServer,
) -> anyhow::Result<()> {
    match kind {
        ServerKind::Weft => {
            let port = free_port()?;
            let command = weft_command(programs, work_dir, port, &[]);
            server.add(
                spawn_logged(command, &work_dir.join("weft.log"))?,
                port,
                Dialect::YWebsocket,
            );
            wait_weft_ready(loopback(port), || server.check_alive())?;
        }
        ServerKind::WeftCluster => {
            launch_weft_cluster(&ClusterSpec::TWO_NODES, programs, work_dir, server)?;
        }
        ServerKind::WeftClusterReplicated => {
            let spec = ClusterSpec {
                brokers: 3,
                ..ClusterSpec::TWO_NODES
            };
            launch_weft_cluster(&spec, programs, work_dir, server)?;
        }
        ServerKind::YWebsocket => {
            let port = free_port()?;
            let command = y_websocket_command(programs, port);
            server.add(
                spawn_logged(command, &work_dir.join("y-websocket.log"))?,
                port,
                Dialect::YWebsocket,
            );
            wait_tcp(loopback(port), || server.check_alive())?;
        }
        ServerKind::Hocuspocus => {
            let port = free_port()?;
            let command = hocuspocus_command(programs, port, None, "solo");
            server.add(
                spawn_logged(command, &work_dir.join("hocuspocus.log"))?,
                port,
                Dialect::Hocuspocus,
            );
            wait_tcp(loopback(port), || server.check_alive())?;
        }
        ServerKind::HocuspocusRedis => {
            let redis = programs
                .redis_server
                .as_ref()
                .context("no redis-server given")?;
            let redis_port = free_port()?;
            let mut command = Command::new(redis);
            command
                .current_dir(work_dir)
                .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
                .args(["--save", "", "--appendonly", "no"]);
            server
                .children
                .push(spawn_logged(command, &work_dir.join("redis.log"))?);
            wait_tcp(loopback(redis_port), || server.check_alive())?;
            for node in ["a", "b"] {
                let port = free_port()?;
                let command = hocuspocus_command(programs, port, Some(redis_port), node);
                let log = work_dir.join(format!("hocuspocus-{node}.log"));
                server.add(spawn_logged(command, &log)?, port, Dialect::Hocuspocus);
            }
            for index in 0..2 {
                let addr = server.endpoints[index].addr;
                wait_tcp(addr, || server.check_alive())?;
            }
        }
    }
    Ok(())
}

/// A Weft cluster: `nodes` nodes over fresh Apache Kafka brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterSpec {
    pub(crate) nodes: usize,
    /// Kafka brokers: 1, or 3 with the topics replicated three times.
    pub(crate) brokers: usize,
    /// `--kafka-partitions` of the topics the first node creates.
    pub(crate) partitions: u32,
    /// `--kafka-consume` (`held` or `all`); `None` leaves Weft's default.
    pub(crate) consume: Option<&'static str>,
    /// `--cluster-mode ownership` (with a cluster secret).
    pub(crate) ownership: bool,
}

impl ClusterSpec {
    /// Scenario 1's cluster.
    const TWO_NODES: ClusterSpec = ClusterSpec {
        nodes: 2,
        brokers: 1,
        partitions: 2,
        consume: None,
        ownership: false,
    };
}

/// Starts the Weft cluster `spec` fresh in a new directory under `scratch`
/// (kind [`ServerKind::WeftCluster`], one endpoint per node).
pub(crate) fn start_weft_cluster(
    spec: &ClusterSpec,
    programs: &Programs,
    scratch: &Path,
) -> anyhow::Result<RunningServer> {
    let kind = ServerKind::WeftCluster;
    let work_dir = scratch.join(format!("{kind:?}-{}-{}", spec.nodes, crate::clock::nanos()));
    let mut server = RunningServer::empty(kind, &work_dir)?;
    if let Err(error) = launch_weft_cluster(spec, programs, &work_dir, &mut server) {
        let logs = server.keep_logs().display().to_string();
        return Err(error.context(format!("start {} Weft nodes (logs in {logs})", spec.nodes)));
    }
    Ok(server)
}

fn launch_weft_cluster(
    spec: &ClusterSpec,
    programs: &Programs,
    work_dir: &Path,
    server: &mut RunningServer,
) -> anyhow::Result<()> {
    let launcher = programs
        .kafka
        .as_ref()
        .context("no Kafka launcher given (--kafka)")?;
    let (started, brokers) = Brokers::start(launcher, &work_dir.join("kafka"), spec.brokers)?;
    server.brokers = Some(started);
    let fetch_wait = programs.kafka_fetch_wait_ms.map(|ms| ms.to_string());
    let partitions = spec.partitions.to_string();
    let replication = spec.brokers.min(3).to_string();
    for index in 0..spec.nodes {
        // Nodes a, b, c...: the two-node cluster's names stay what they were.
        let node = node_name(index);
        let port = free_port()?;
        let node_id = format!("bench-{node}");
        let mut extra = vec![
            "--kafka-brokers",
            brokers.as_str(),
            "--kafka-partitions",
            partitions.as_str(),
            "--kafka-replication-factor",
            replication.as_str(),
            "--node-id",
            node_id.as_str(),
        ];
        if let Some(fetch_wait) = &fetch_wait {
            extra.extend(["--kafka-fetch-wait-ms", fetch_wait.as_str()]);
        }
        if let Some(consume) = spec.consume {
            extra.extend(["--kafka-consume", consume]);
        }
        if spec.ownership {
            // Each node advertises its listen address (the default).
            extra.extend([
                "--cluster-mode",
                "ownership",
                "--cluster-secret",
                BENCH_CLUSTER_SECRET,
            ]);
        }
        // Each node its own SQLite file: two processes creating one fresh
        // database at once race on its migrations.
        let node_dir = work_dir.join(&node);
        let command = weft_command(programs, &node_dir, port, &extra);
        let log = work_dir.join(format!("weft-{node}.log"));
        server.add(spawn_logged(command, &log)?, port, Dialect::YWebsocket);
    }
    for index in 0..spec.nodes {
        let addr = server.endpoints[index].addr;
        wait_weft_ready(addr, || server.check_alive())?;
    }
    Ok(())
}

/// The cluster secret of the bench's clusters of owners.
const BENCH_CLUSTER_SECRET: &str = "weft-bench-cluster-secret";

/// The `index`-th node's name: a, b, ..., z, then n26, n27...
fn node_name(index: usize) -> String {
    match u8::try_from(index) {
        Ok(small) if small < 26 => char::from(b'a' + small).to_string(),
        _ => format!("n{index}"),
    }
}

impl RunningServer {
    /// A server of `kind` with nothing started yet, its work directory
    /// created.
    fn empty(kind: ServerKind, work_dir: &Path) -> anyhow::Result<RunningServer> {
        std::fs::create_dir_all(work_dir).context("create work dir")?;
        Ok(RunningServer {
            kind,
            endpoints: Vec::new(),
            server_pids: Vec::new(),
            children: Vec::new(),
            brokers: None,
            work_dir: work_dir.to_owned(),
            keep_work_dir: false,
        })
    }

    /// `result`, with a failure saying where this server's logs are kept
    /// (and keeping them).
    pub(crate) fn with_logs<T>(&mut self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        result.map_err(|error| {
            error.context(format!(
                "server logs kept in {}",
                self.keep_logs().display()
            ))
        })
    }

    fn add(&mut self, child: Child, port: u16, dialect: Dialect) {
        self.server_pids.push(child.id());
        self.children.push(child);
        self.endpoints.push(Endpoint {
            addr: loopback(port),
            dialect,
        });
    }

    /// Which server this is.
    pub(crate) fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Stops a single Weft node with SIGTERM (a clean shutdown, bounded in
    /// time) and starts it again on the same store and a new port, so that
    /// it loads documents from its snapshots and log. Returns the time from
    /// the signal to ready.
    pub(crate) fn restart_weft(&mut self, programs: &Programs) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            self.kind == ServerKind::Weft && self.children.len() == 1,
            "only a single Weft node is restarted"
        );
        let started = Instant::now();
        let pid = self.server_pids[0];
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("run kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = started + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.children[0].try_wait().context("poll weft")? {
                anyhow::ensure!(status.success(), "weft exited with {status} after SIGTERM");
                break;
            }
            if Instant::now() > deadline {
                bail!("weft did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(READY_POLL);
        }
        let port = free_port()?;
        let command = weft_command(programs, &self.work_dir.clone(), port, &[]);
        let child = spawn_logged(command, &self.work_dir.join("weft-restarted.log"))?;
        self.server_pids[0] = child.id();
        self.children[0] = child;
        self.endpoints[0].addr = loopback(port);
        wait_weft_ready(loopback(port), || self.check_alive())?;
        Ok(started.elapsed())
    }

    /// Kills the serving process of endpoint `index` with SIGKILL (a crash:
    /// no shutdown, no goodbye to clients or the cluster) and reaps it.
    pub(crate) fn kill_node(&mut self, index: usize) -> anyhow::Result<()> {
        let pid = *self
            .server_pids
            .get(index)
            .with_context(|| format!("no server process {index}"))?;
        let child = self
            .children
            .iter_mut()
            .find(|child| child.id() == pid)
            .with_context(|| format!("no child with pid {pid}"))?;
        child.kill().with_context(|| format!("SIGKILL {pid}"))?;
        child.wait().with_context(|| format!("reap {pid}"))?;
        Ok(())
    }

    /// Starts a single-process server again on its old port after
    /// [`RunningServer::kill_node`], without waiting for it: its clients'
    /// reconnect attempts find out when it accepts. Returns the new pid.
    pub(crate) fn respawn_same_port(&mut self, programs: &Programs) -> anyhow::Result<u32> {
        anyhow::ensure!(
            self.server_pids.len() == 1 && self.children.len() == 1,
            "only a single-process server is started again in place"
        );
        let port = self.endpoints[0].addr.port();
        let (command, log) = match self.kind {
            ServerKind::Weft => (
                weft_command(programs, &self.work_dir.clone(), port, &[]),
                "weft-respawned.log",
            ),
            ServerKind::YWebsocket => (
                y_websocket_command(programs, port),
                "y-websocket-respawned.log",
            ),
            ServerKind::Hocuspocus => (
                hocuspocus_command(programs, port, None, "solo"),
                "hocuspocus-respawned.log",
            ),
            kind => bail!("{} is not a single-process server", kind.label()),
        };
        let child = spawn_logged(command, &self.work_dir.join(log))?;
        let pid = child.id();
        self.server_pids[0] = pid;
        self.children[0] = child;
        Ok(pid)
    }

    /// Keeps the logs for a post-mortem; returns where they are.
    pub(crate) fn keep_logs(&mut self) -> &Path {
        self.keep_work_dir = true;
        &self.work_dir
    }

    /// Fails if a process of this server has exited (with its log's tail).
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            if let Some(status) = child.try_wait().context("poll child")? {
                bail!(
                    "a server process exited early ({status}); logs in {}",
                    self.work_dir.display()
                );
            }
        }
        Ok(())
    }

    /// The sum of CPU seconds of the serving processes.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for pid in &self.server_pids {
            total += crate::procstat::cpu_seconds(*pid)?;
        }
        Ok(total)
    }
}
