//! The connection of `run` and `collect`: the client for the server the settings name, with the
//! in-process simulator for `--simulate`, and which world that server is (the simulator or the
//! API: a run never takes one's task ids for the other's).

use crate::client::{BaseUrl, Client, SIMULATOR_TOKEN, Token};
use crate::exit;
use crate::results::World;
use crate::retry::{Ending, Retrier, Step};
use crate::settings::{ConnectionSettings, Server, defaults};
use crate::shutdown::Shutdown;

/// The API connection of `run` and `collect`: the client, and the in-process simulator when
/// `--simulate` started one (kept alive as long as this value).
pub(crate) struct Connection {
    /// The shared HTTP client.
    pub client: Client,
    /// The simulator `--simulate` started, kept alive as long as the connection.
    pub _simulator: Option<crate::sim::Simulator>,
}

/// Build the connection: `--simulate` starts the simulator and uses a dummy token; otherwise the
/// token must be in `HIDREAM_API_TOKEN` (exit 2 before anything is sent).
pub(crate) async fn connect(settings: &ConnectionSettings) -> anyhow::Result<Connection> {
    let (pool, timeout) = (settings.concurrency, settings.timeout);
    let base = match &settings.server {
        Server::Simulator => {
            // The `simulate` command's default latency, so a rehearsal feels like the real API.
            let config = crate::sim::SimConfig {
                latency: crate::units::Latency::Fixed(defaults::duration(
                    defaults::DEFAULT_LATENCY,
                )),
                ..crate::sim::SimConfig::default()
            };
            let sim = crate::sim::start(config)
                .await
                .map_err(|e| exit::aborted(format!("cannot start the simulator: {e}")))?;
            tracing::info!("simulator listening on {}", sim.base_url());
            let base = BaseUrl::parse(&sim.base_url()).map_err(exit::invalid)?;
            let token = Token::new(SIMULATOR_TOKEN.into()).expect("non-empty");
            let client = Client::new(base, &token, timeout, pool).map_err(exit::invalid)?;
            return Ok(Connection {
                client,
                _simulator: Some(sim),
            });
        }
        Server::Url { url, .. } => url.clone(),
        Server::Api => BaseUrl::REAL,
    };
    let token = Token::from_env().ok_or_else(|| {
        exit::invalid(format!(
            "`{}` is not set: export your HiDream API token (or use --simulate to try the tool); nothing was sent",
            crate::env_vars::API_TOKEN
        ))
    })?;
    let client = Client::new(base, &token, timeout, pool).map_err(exit::invalid)?;
    Ok(Connection {
        client,
        _simulator: None,
    })
}

/// Which server the run talks to. `--simulate` is the simulator and no `--base-url` the API; a
/// `--base-url` is asked (one `HEAD`, without the token, retried like a submission while it cannot
/// connect): the simulator marks every answer.
pub(crate) async fn world(
    settings: &ConnectionSettings,
    shutdown: &Shutdown,
) -> anyhow::Result<World> {
    let (url, text) = match &settings.server {
        Server::Simulator => return Ok(World::Simulator),
        Server::Api => return Ok(World::Api),
        Server::Url { url, text } => (url, text),
    };
    let token = Token::new("not-sent".into()).expect("non-empty");
    let client = Client::new(url.clone(), &token, settings.timeout, 1).map_err(exit::invalid)?;
    let retrier = Retrier::new(settings.retry.clone(), shutdown.clone());
    let ending = retrier
        .drive(None, "--base-url", async |_| match client.world().await {
            Ok(w) => Step::Done(w),
            Err(e) => Step::Retry {
                reason: e.to_string(),
                retry_after: None,
            },
        })
        .await;
    match ending {
        Ending::Done(w) => Ok(w),
        Ending::Stopped {
            reason: Some(_), ..
        } => Err(exit::interrupted(
            "interrupted while starting: nothing was sent",
        )),
        Ending::Exhausted { reason, .. } => Err(exit::aborted(format!(
            "cannot reach --base-url `{text}` ({reason}); a run first asks it whether it is the simulator; nothing was sent"
        ))),
        Ending::Stopped { reason: None, .. } => Err(exit::interrupted(
            "interrupted while starting: nothing was sent",
        )),
    }
}
