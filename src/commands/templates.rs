//! `templates human|scene`: read a whole template list and print it (a table, CSV or JSON), and
//! with `--gallery DIR` write a page of the templates' covers (see [`crate::templates`]).

use crate::client::connection::connect;
use crate::exit;
use crate::retry::Retrier;
use crate::settings::{ListFormat, TemplatesSettings};
use crate::shutdown::Shutdown;
use crate::templates::{self, gallery, output};

use super::print_out;

/// `hidream-batch templates human|scene`, stopped by `shutdown`. Exit 0; 1 when some covers of
/// the gallery could not be fetched; 2 for a missing token; 3 when the list cannot be read.
pub async fn run(settings: TemplatesSettings, shutdown: Shutdown) -> anyhow::Result<u8> {
    let conn = connect(&settings.connection).await?;
    let which = settings.which;
    let list = templates::read(
        &conn.client,
        &settings.connection,
        &shutdown,
        which,
        settings.page_size,
    )
    .await?;
    let origin = conn.client.base().model_origin().to_string();
    let text = match settings.format {
        ListFormat::Table => output::table(&list),
        ListFormat::Csv => {
            output::csv(&list).map_err(|e| exit::aborted(format!("cannot write the CSV: {e}")))?
        }
        ListFormat::Json => output::json(&list),
    };
    tracing::info!("{} {which} templates from {origin}", list.templates.len());
    let printed = print_out(&text)?;
    let Some(dir) = &settings.gallery else {
        return Ok(printed);
    };
    let retrier = Retrier::new(settings.connection.retry.clone(), shutdown.clone());
    let covers = gallery::write(
        &list,
        dir,
        &conn.client,
        &retrier,
        settings.connection.concurrency,
        &origin,
    )
    .await?;
    let page = dir.join(gallery::INDEX_HTML);
    tracing::info!(
        "gallery: {} covers fetched, {} already there, {} failed, {} without a cover; {}",
        covers.fetched,
        covers.present,
        covers.failed,
        covers.none,
        page.display()
    );
    if shutdown.signals() > 0 {
        return Ok(exit::INTERRUPTED);
    }
    Ok(if covers.failed > 0 {
        exit::INCOMPLETE
    } else {
        printed
    })
}
