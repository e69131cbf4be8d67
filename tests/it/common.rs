//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The repository root (tests run the binary from there, so paths in messages are relative).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test, run from the repository root, with no inherited token.
pub fn bin() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("hidream-batch").expect("binary is built");
    cmd.current_dir(root())
        .env_remove("HIDREAM_API_TOKEN")
        .env_remove("RUST_LOG");
    cmd
}

use std::path::Path;
use std::process::Output;

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
