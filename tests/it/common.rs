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
