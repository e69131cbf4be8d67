//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The repository root (tests run the binary from there, so paths in messages are relative).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test, run from the repository root, with no inherited token (nor time hook:
/// a test that wants one sets it).
pub fn bin() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("hidream-batch").expect("binary is built");
    cmd.current_dir(root())
        .env_remove("HIDREAM_API_TOKEN")
        .env_remove("RUST_LOG")
        .env_remove(hidream_batch::env_vars::TIME_SCALE);
    cmd
}

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hidream_batch::sim::{self, SimConfig, Simulator};

/// The token the tests use against the simulator and wiremock.
pub const TOKEN: &str = "test-token-5f3a9c1e-DO-NOT-LEAK";

/// Start a simulator that accepts [`TOKEN`], with no latency unless the config says otherwise.
pub async fn simulator(config: SimConfig) -> Simulator {
    sim::start(SimConfig {
        token: Some(TOKEN.into()),
        ..config
    })
    .await
    .expect("simulator starts")
}

/// GET `url` from a simulator, with the token, and read the answer as JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(c: &reqwest::Client, url: String) -> T {
    c.get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("a JSON body")
}

/// A config with no latency and no faults.
pub fn quiet() -> SimConfig {
    SimConfig {
        latency: "0ms".parse().unwrap(),
        ..SimConfig::default()
    }
}

/// A scratch folder holding [`txt2img_manifest`]`(name, n, counts)`, and the path of a results file
/// in it (`r.csv`, not created). The folder lives as long as the returned guard.
pub fn txt2img_scratch(
    name: &str,
    n: usize,
    counts: &[u32],
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), name, n, counts);
    let out = dir.path().join("r.csv");
    (dir, manifest, out)
}

/// A text-to-image manifest of `n` requests (`img_count` cycling through `counts`) in `dir`.
pub fn txt2img_manifest(dir: &Path, name: &str, n: usize, counts: &[u32]) -> std::path::PathBuf {
    let mut yaml = format!("name: {name}\njobs:\n");
    for (i, c) in (0..n).zip(counts.iter().cycle()) {
        yaml += &format!(
            "  - id: j{i}\n    kind: txt2img\n    prompt: \"prompt number {i}\"\n    img_count: {c}\n"
        );
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Run the binary (blocking, on a worker thread) with the test token in the environment.
pub async fn run_bin(args: Vec<String>, envs: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = bin();
        cmd.env("HIDREAM_API_TOKEN", TOKEN).args(&args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("binary runs")
    })
    .await
    .unwrap()
}

/// Rows of a results CSV as maps from column to value.
pub fn results(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).expect("results exist");
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

/// Change the value of an option already in `args` (e.g. `--rate` from [`run_args`]).
pub fn set_option(args: &mut [String], name: &str, value: &str) {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} in the arguments"));
    args[i + 1] = value.to_string();
}

/// Arguments of `run` against `base` writing `out`, quick retries, no rate limit.
pub fn run_args(manifest: &Path, base: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        manifest.display().to_string(),
        "--base-url".into(),
        base.into(),
        "-o".into(),
        out.display().to_string(),
        "--rate".into(),
        "0".into(),
        "--backoff".into(),
        "5ms".into(),
        "--poll-rate".into(),
        "0".into(),
        "--poll-interval".into(),
        "50ms".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The submissions a wiremock server received (the `HEAD` a run sends first, to tell the simulator
/// from the API, is left out).
pub async fn submissions(server: &wiremock::MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect()
}

/// Start the binary as a child process (stdout and stderr piped) with the test token.
pub fn spawn(args: &[String]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("hidream-batch"))
        .current_dir(root())
        .env("HIDREAM_API_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .env_remove(hidream_batch::env_vars::TIME_SCALE)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

/// Rows in a results file (0 if it does not exist yet).
pub fn row_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

/// Poll `condition` until it holds (bounded: a test must not hang).
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

pub async fn wait(child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

/// A child whose stderr is collected as it is written, so a test can wait for a log line.
pub struct Watched {
    pub child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Watched {
    pub fn start(args: &[String]) -> Watched {
        let mut child = spawn(args);
        let pipe = child.stderr.take().expect("stderr piped");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watched {
            child,
            stderr,
            reader,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for the process; its exit code and everything it wrote on stderr.
    pub async fn finish(self) -> (Option<i32>, String) {
        let Watched {
            child,
            stderr,
            reader,
        } = self;
        let output = wait(child).await;
        tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        let text = stderr.lock().unwrap().clone();
        (output.status.code(), text)
    }
}

/// Poll an async `condition` until it holds (bounded: a test must not hang).
pub async fn until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `<results>.<ext>`.
pub fn sibling(results: &Path, ext: &str) -> std::path::PathBuf {
    let mut s = results.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    s.into()
}

/// The request ids of the write-ahead log's open entries (a `sent` line without a `done` after it).
pub fn open_entries(results: &Path) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(sibling(results, "wal")).unwrap_or_default();
    let mut open = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut f = line.split(' ');
        match (f.next(), f.next()) {
            (Some("sent"), Some(id)) => {
                open.insert(id.to_string());
            }
            (Some("done"), Some(id)) => {
                open.remove(id);
            }
            _ => {}
        }
    }
    open
}

/// The request ids a manifest expands to, in order (from `expand`).
pub fn expanded_ids(args: &[&str]) -> Vec<String> {
    let out = bin().arg("expand").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A wiremock server that accepts every text-to-image submission with a fresh task id.
pub async fn accepting_server() -> wiremock::MockServer {
    use std::sync::atomic::{AtomicU64, Ordering};
    let server = wiremock::MockServer::start().await;
    let n = AtomicU64::new(0);
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "code": 0, "message": "Success", "request_id": "r",
                "result": {"task_id": format!("task-{i}"), "sub_task_ids": [format!("task-{i}-0")]}
            }))
        })
        .mount(&server)
        .await;
    server
}

/// The header of a results file: its leading columns.
pub const RESULTS_HEADER: &str = "request_id,job,kind,status,task_id,sub_task_ids,attempts,http_status,code,message,submitted_at,elapsed_ms";

/// Write a results file with the leading columns and these rows (CSV lines, without line ends).
pub fn write_results(path: &Path, rows: &[String]) {
    let mut text = format!("{RESULTS_HEADER}\n");
    for r in rows {
        text += r;
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Assert a finished run's exit code, showing its stderr if it is not the one expected.
/// The results at `path` hold `n` rows, every one `submitted`.
pub fn all_submitted(path: &Path, n: usize) {
    let rows = results(path);
    assert_eq!(rows.len(), n, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "submitted"), "{rows:?}");
}

pub fn exits(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
