//! The README's usage block is the output of `hidream-batch --help`: this fails when they drift.

use crate::common::{bin, root};

#[test]
fn readme_usage_matches_help() {
    let help = String::from_utf8(bin().arg("--help").output().unwrap().stdout).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let marker = "<!-- usage:";
    let start = readme.find(marker).expect("usage marker in README");
    let block = &readme[start..];
    let open = block.find("```text\n").expect("usage block") + "```text\n".len();
    let close = block[open..].find("\n```").expect("end of usage block");
    assert_eq!(
        &block[open..open + close],
        help.trim_end(),
        "README usage block differs from --help"
    );
}

#[test]
fn readme_first_screen_has_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    assert!(first.contains("cargo run --release -- run manifests/sweep.yaml --simulate"));
    assert!(first.contains("cargo test --locked"));
}
