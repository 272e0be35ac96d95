//! The exact conditions of a run, for the report: the machine, the
//! programs' versions and the Kafka broker's setup.

use std::process::Command;

use crate::Mode;
use crate::processes::Programs;

/// The exact conditions of the run, for the report.
pub(crate) fn conditions(programs: &Programs, mode: Mode, repeats: u32) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let peer_version = |package: &str| {
        let path = programs
            .peers_dir
            .join("node_modules")
            .join(package)
            .join("package.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "not installed".to_owned())
    };
    let fd_limit = command_output("sh", &["-c", "ulimit -n"]);
    vec![
        (
            "date (UTC)".into(),
            command_output("date", &["-u", "+%Y-%m-%d %H:%M"]),
        ),
        (
            "mode".into(),
            format!("{mode:?} ({repeats} run(s) of each cell)"),
        ),
        ("CPU".into(), cpu_model),
        ("cores".into(), cores.to_string()),
        ("kernel".into(), kernel.trim().to_owned()),
        ("open files limit".into(), fd_limit),
        (
            "Weft".into(),
            command_output(&programs.weft.to_string_lossy(), &["--version"]),
        ),
        (
            "Node.js".into(),
            command_output(&programs.node.to_string_lossy(), &["--version"]),
        ),
        (
            "@y/websocket-server".into(),
            peer_version("@y/websocket-server"),
        ),
        (
            "@hocuspocus/server".into(),
            peer_version("@hocuspocus/server"),
        ),
        (
            "@hocuspocus/extension-redis".into(),
            peer_version("@hocuspocus/extension-redis"),
        ),
        (
            "redis-server".into(),
            programs
                .redis_server
                .as_ref()
                .map_or("not given".into(), |path| {
                    command_output(&path.to_string_lossy(), &["--version"])
                }),
        ),
        ("Kafka broker".into(), kafka_broker(programs)),
        (
            "Weft --kafka-fetch-wait-ms".into(),
            programs
                .kafka_fetch_wait_ms
                .map_or_else(|| "Weft's default".to_owned(), |ms| ms.to_string()),
        ),
    ]
}

/// The broker Weft's cluster runs use, as the conditions name it.
fn kafka_broker(programs: &Programs) -> String {
    let Some(launcher) = &programs.kafka else {
        return "not given".into();
    };
    let version = command_output(&launcher.to_string_lossy(), &["version"]);
    let java = Command::new("java")
        .arg("-version")
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|error| format!("unavailable ({error})"));
    format!(
        "Apache Kafka {version} (KRaft, combined broker and controller; jars from Maven Central) on {java}; \
         one broker, or three with topics at RF 3 and min.insync.replicas=2; producer acks=all, idempotent; \
         data on the local disk, no fsync per append (Kafka's default); broker settings in tests/kafka/kafka.sh"
    )
}

/// `program`'s trimmed stdout, or why it could not be run.
fn command_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(error) => format!("unavailable ({error})"),
    }
}
