//! `simulate`: serve the local stand-in of the API until the shutdown's first signal.

use std::io::Write;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::settings::SimSettings;
use crate::shutdown::Shutdown;

/// `hidream-batch simulate`: listen, print the address, serve until Ctrl-C or SIGTERM.
pub async fn run(settings: SimSettings, shutdown: Shutdown) -> anyhow::Result<u8> {
    let config = settings.config;
    let addr = tokio::net::lookup_host(settings.listen.as_str())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            crate::exit::invalid(format!(
                "`--listen`: `{}` is not an address like `127.0.0.1:8787`",
                settings.listen
            ))
        })?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on `{addr}`"))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "hidream-batch simulator listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(
        latency = %config.latency,
        error_rate = config.error_rate,
        rate_limit = ?config.rate_limit,
        max_concurrent = ?config.max_concurrent,
        task_time = %humantime::format_duration(config.task_time),
        token_required = config.token.is_some(),
        seed = config.seed,
        "simulator ready"
    );
    crate::sim::serve(listener, config, async move { shutdown.stopping().await })
        .await
        .context("the simulator stopped")?;
    tracing::info!("simulator stopped");
    Ok(crate::exit::OK)
}
