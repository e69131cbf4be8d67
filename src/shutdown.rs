//! One shutdown for every command (mini-redis's `Shutdown`, on `tokio_util`'s
//! `CancellationToken`): the first request stops *dispatching* — no new request, query or
//! download starts; those in flight finish and are recorded — and the second stops *now*.
//!
//! `app` turns SIGINT and SIGTERM into [`Shutdown::signal`] ([`Shutdown::listen`]); a test calls
//! it directly on the library's `run` or `collect`. A command that stops for a reason of its own
//! (the API refused the credentials, `collect --timeout` passed) stops its own [`Shutdown::child`]:
//! the child stops dispatching when its parent does, never the reverse, and no signal is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_util::sync::CancellationToken;

/// A shutdown that can be triggered and awaited; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled at the first signal (or [`Shutdown::stop_dispatch`]).
    dispatch: CancellationToken,
    /// Cancelled at the second signal.
    now: CancellationToken,
    signals: Arc<AtomicU32>,
}

impl Shutdown {
    /// A shutdown nothing has triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A signal: the first stops dispatching, the second stops now. Returns how many have come.
    pub fn signal(&self) -> u32 {
        let n = self.signals.fetch_add(1, Ordering::SeqCst) + 1;
        self.dispatch.cancel();
        if n >= 2 {
            self.now.cancel();
        }
        n
    }

    /// How many signals have come.
    pub fn signals(&self) -> u32 {
        self.signals.load(Ordering::SeqCst)
    }

    /// Stop dispatching for a reason that is not a signal.
    pub fn stop_dispatch(&self) {
        self.dispatch.cancel();
    }

    /// Whether dispatching has stopped.
    pub fn is_stopping(&self) -> bool {
        self.dispatch.is_cancelled()
    }

    /// Completes once dispatching has stopped.
    pub async fn stopping(&self) {
        self.dispatch.cancelled().await;
    }

    /// Completes at the second signal.
    pub async fn stopped_now(&self) {
        self.now.cancelled().await;
    }

    /// A shutdown that stops dispatching when this one does, or on its own (without stopping
    /// this one); it shares the signals and the second-signal stop.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            dispatch: self.dispatch.child_token(),
            now: self.now.clone(),
            signals: self.signals.clone(),
        }
    }

    /// Turn SIGINT and SIGTERM into [`Shutdown::signal`] (tasks on the current runtime).
    pub fn listen(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            match signal(kind) {
                Ok(mut s) => {
                    let shutdown = self.clone();
                    tokio::spawn(async move {
                        while s.recv().await.is_some() {
                            shutdown.signal();
                        }
                    });
                }
                Err(e) => tracing::warn!("cannot listen for signals: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_stops_dispatch_the_second_stops_now() {
        let s = Shutdown::new();
        let child = s.child();
        assert!(!s.is_stopping() && !child.is_stopping());
        assert_eq!(s.signal(), 1);
        assert!(s.is_stopping() && child.is_stopping());
        assert!(!s.now.is_cancelled());
        assert_eq!(child.signal(), 2);
        assert!(s.now.is_cancelled());
    }

    #[test]
    fn a_child_stops_alone() {
        let s = Shutdown::new();
        let child = s.child();
        child.stop_dispatch();
        assert!(child.is_stopping());
        assert!(!s.is_stopping());
        assert_eq!(s.signals(), 0);
    }
}
