//! `collect`: poll the tasks of a results CSV, download finished images, write images.csv and the
//! contact sheet (see [`crate::collect`]).

use crate::client::connection::connect;
use crate::exit;
use crate::settings::CollectSettings;
use crate::shutdown::Shutdown;

/// `hidream-batch collect`, stopped by `shutdown`.
pub async fn run(settings: CollectSettings, shutdown: Shutdown) -> anyhow::Result<u8> {
    if !settings.results.exists() {
        // Before the connection, so a typo is reported as such even without a token.
        return Err(exit::invalid(format!(
            "the results `{}` do not exist: give the results CSV written by `run` with --results PATH",
            settings.results.display()
        )));
    }
    let conn = connect(&settings.connection).await?;
    crate::collect::collect(&conn.client, &settings, Default::default(), &shutdown).await
}
