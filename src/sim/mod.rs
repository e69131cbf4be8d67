//! The simulator (placeholder; being written).
pub async fn run_cli(_args: &crate::cli::SimulateArgs) -> anyhow::Result<u8> {
    Err(crate::exit::invalid("simulator not built yet"))
}
