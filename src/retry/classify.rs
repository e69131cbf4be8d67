//! What an attempt's result means, for each of the three kinds of attempt side by side: a
//! submission ([`submission`]), a task query ([`query`]) and an image download ([`download`]).
//! They share one rule, [`transient`]: HTTP 408, 429 and 5xx are worth another attempt after a
//! backoff. They differ where money is at stake: a query or a download is a GET and safe to
//! repeat after any failure, a submission only after an answer that proves no task was created.
//!
//! Submissions:
//!
//! | result | verdict | did it create a task? |
//! |---|---|---|
//! | HTTP 200, `code == 0`, a task id | `Submitted` | yes |
//! | HTTP 200, `code == 0`, no task id, or ids that cannot be recorded as sent (see [`unrecordable`]); a 2xx body unreadable or over 1 MiB | `Unknown` | maybe |
//! | HTTP 200, `code != 0` listed by `--retry-code` | `Retry` (the message is the API's; the run keeps the code), honouring `Retry-After`; out of attempts: `failed` | no |
//! | HTTP 200, `code != 0`, not listed | `Rejected` with code and message | no |
//! | HTTP 401 / 403 | `Unauthorized`: stop dispatching, exit 3 | no |
//! | HTTP 504, 524, 598, 599 (a gateway gave up waiting on an upstream that had the request), 520 (the upstream's answer was lost) | `Unknown` | maybe |
//! | HTTP 408 / 429 / other 5xx | `Retry`, honouring `Retry-After` | no |
//! | other HTTP statuses (4xx, 3xx, …) | `Rejected` | no |
//! | not sent (connection refused, DNS, no connection within the connect timeout) | `Retry` | no |
//! | our own body could not be produced whole (an image unreadable, or edited since validation) | `Failed`, not retried | no |
//! | sent, no answer (timeout, connection closed) | `Unknown`; retried only with `--retry-unknown` | maybe |
//!
//! Every `Retry` is an answer that proves no task was created: the run notes it in the
//! write-ahead log, so a crash during the backoff leaves the request `failed` (sent again), not
//! `unknown`. A business refusal proves it as well as a 429 does (`code != 0` means the API did
//! not take the request), which is why `--retry-code` may turn one into a `Retry`: an account
//! whose refusals are temporary (a task limit that frees up as tasks finish) is retried instead
//! of recorded `rejected`. Only 2xx answers: another status with such a code is `Rejected` as
//! before (the flag names what the API says in its envelope of success, SPEC §5).
//!
//! Task queries ([`query`]) and the pages of the template lists (`crate::templates`) are read
//! by one rule ([`reply`]); for a task query, an answer with `code == 0` and a result is the answer; `code != 0`
//! and other 4xx are a refusal (not asked again this run); 401/403 stop everything; transient
//! statuses, transport failures and unreadable answers are retried.
//!
//! Downloads ([`download`]): 2xx is the image; transient statuses are retried; any other status
//! is a failure recorded for the image.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::api::TaskResult;
use crate::api::answer::Reply;
use crate::client::Attempt;

/// The one rule the three share: an HTTP status worth another attempt after a backoff (the
/// server was busy or failed; it did nothing with the request).
pub(crate) fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// What an attempt means for the request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Submitted {
        task_id: String,
        sub_task_ids: Vec<String>,
    },
    /// Transient, and no task was created: try again after a backoff (at least `retry_after`).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The API refused the request: never resent automatically.
    Rejected { code: Option<i64>, message: String },
    /// The credentials were refused.
    Unauthorized { message: String },
    /// Sent, but no usable answer: the API may have created (and billed) the task.
    Unknown { reason: String },
    /// Our own request could not be sent whole: no task; trying again would fail the same way.
    Failed { reason: String },
}

impl std::fmt::Display for Verdict {
    /// One line for a log: "submitted as task t-1 (4 images)", "retry after 2s: HTTP 503: busy".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Submitted {
                task_id,
                sub_task_ids,
            } => write!(
                f,
                "submitted as task {task_id} ({} sub-tasks)",
                sub_task_ids.len()
            ),
            Verdict::Retry {
                reason,
                retry_after: Some(after),
            } => write!(
                f,
                "to retry (Retry-After {}): {reason}",
                humantime::format_duration(*after)
            ),
            Verdict::Retry { reason, .. } => write!(f, "to retry: {reason}"),
            Verdict::Rejected {
                code: Some(code),
                message,
            } => write!(f, "rejected with code {code}: {message}"),
            Verdict::Rejected { message, .. } => write!(f, "rejected: {message}"),
            Verdict::Unauthorized { message } => write!(f, "credentials refused: {message}"),
            Verdict::Unknown { reason } => write!(f, "outcome unknown: {reason}"),
            Verdict::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// Classify one submission attempt (taking it: its strings move into the verdict).
/// `retry_codes`: the `code`s of a 2xx answer that are transient (`--retry-code`).
pub(crate) fn submission(attempt: Attempt, retry_codes: &BTreeSet<i64>) -> Verdict {
    match attempt {
        Attempt::NotSent(reason) => Verdict::Retry {
            reason,
            retry_after: None,
        },
        Attempt::NoAnswer(reason) => Verdict::Unknown { reason },
        Attempt::BodyFailed(reason) => Verdict::Failed { reason },
        Attempt::Answered {
            status,
            retry_after,
            envelope,
        } => {
            let code = envelope.as_ref().ok().map(|e| e.code);
            let message = |envelope: &Result<Reply, String>| match envelope {
                Ok(e) => e.message.clone(),
                Err(m) => m.clone(),
            };
            match status {
                401 | 403 => Verdict::Unauthorized {
                    message: format!("HTTP {status}: {}", message(&envelope)),
                },
                504 | 520 | 524 | 598 | 599 => Verdict::Unknown {
                    reason: format!(
                        "HTTP {status}: a gateway gave up waiting for the API, which may have created the task: {}",
                        message(&envelope)
                    ),
                },
                s if transient(s) => Verdict::Retry {
                    reason: format!("HTTP {status}: {}", message(&envelope)),
                    retry_after,
                },
                // `code` first: a refusal is a refusal whatever its `result` holds.
                200..=299 => match envelope {
                    Ok(e) if e.code != 0 && retry_codes.contains(&e.code) => Verdict::Retry {
                        reason: e.message,
                        retry_after,
                    },
                    Ok(e) if e.code != 0 => Verdict::Rejected {
                        code: Some(e.code),
                        message: e.message,
                    },
                    Ok(e) => match e.submitted() {
                        Some(r) => match unrecordable(&r) {
                            None => Verdict::Submitted {
                                task_id: r.task_id,
                                sub_task_ids: r.sub_task_ids,
                            },
                            Some(reason) => Verdict::Unknown { reason },
                        },
                        None => Verdict::Unknown {
                            reason: "the API answered success without a task id".into(),
                        },
                    },
                    Err(m) => Verdict::Unknown { reason: m },
                },
                // Another status (4xx, 3xx): refused, with the envelope's code when it has one.
                _ => Verdict::Rejected {
                    code: code.filter(|c| *c != 0),
                    message: format!("HTTP {status}: {}", message(&envelope)),
                },
            }
        }
    }
}

/// Why the ids of an accepted submission cannot be recorded as the API sent them, if they cannot:
/// a control character in the task id or a sub-task id (a line end would split the results row,
/// an escape sequence would reach a terminal), or a `;` in a sub-task id (the `sub_task_ids` cell
/// joins them with `;`). The task was created, but its id would be read back as another: such an
/// answer is `unknown`, like a success without a task id, and the ids are named escaped.
fn unrecordable(r: &crate::api::Submitted) -> Option<String> {
    let bad = |id: &String| id.chars().any(char::is_control);
    if !bad(&r.task_id) && !r.sub_task_ids.iter().any(|s| bad(s) || s.contains(';')) {
        return None;
    }
    Some(format!(
        "the API answered success with ids that cannot be recorded as sent (control characters, or a `;` in a sub-task id): task id `{}`, sub-task ids `{}`",
        crate::logging::safe(&r.task_id),
        crate::logging::safe(&r.sub_task_ids.join("`, `"))
    ))
}

/// What a task query's answer means.
#[derive(Debug)]
pub(crate) enum QueryVerdict {
    /// The task's state.
    Answer(TaskResult),
    /// Worth another attempt after a backoff (at least `retry_after`).
    Retry {
        /// What went wrong.
        reason: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The API refused the query: not asked again this run.
    Refused(String),
    /// The credentials were refused.
    Unauthorized(String),
}

/// A task query's answer: status, `Retry-After`, the envelope (or why it is unreadable); or an
/// attempt that got no answer.
pub(crate) type QueryAnswer = Result<(u16, Option<Duration>, Result<Reply, String>), Attempt>;

/// What a GET of an API answer (a task query, a page of a template list) means, before its
/// `result` is read: the same rules for every query.
#[derive(Debug)]
pub(crate) enum ReplyVerdict {
    /// HTTP 2xx with `code == 0`: the envelope, its `result` still to be read.
    Answer(Reply),
    /// Worth another attempt after a backoff (at least `retry_after`).
    Retry {
        /// What went wrong.
        reason: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The API refused the query (`code != 0`, HTTP 4xx): not asked again.
    Refused(String),
    /// The credentials were refused (HTTP 401/403).
    Unauthorized(String),
}

/// Classify one GET of an API answer: 401/403 stop; transient statuses, transport failures and
/// unreadable 2xx answers are retried; `code != 0` and other statuses are a refusal.
pub(crate) fn reply(answer: QueryAnswer) -> ReplyVerdict {
    let (status, retry_after, body) = match answer {
        Ok(a) => a,
        Err(Attempt::NotSent(r) | Attempt::NoAnswer(r) | Attempt::BodyFailed(r)) => {
            return ReplyVerdict::Retry {
                reason: r,
                retry_after: None,
            };
        }
        Err(Attempt::Answered { status, .. }) => {
            return ReplyVerdict::Retry {
                reason: format!("HTTP {status}"),
                retry_after: None,
            };
        }
    };
    let message = || match &body {
        Ok(e) => format!("HTTP {status}: code {}: {}", e.code, e.message),
        Err(m) => format!("HTTP {status}: {m}"),
    };
    match status {
        401 | 403 => ReplyVerdict::Unauthorized(message()),
        s if transient(s) => ReplyVerdict::Retry {
            reason: message(),
            retry_after,
        },
        200..=299 => match body {
            Ok(e) if e.code != 0 => ReplyVerdict::Refused(format!(
                "the API refused the query: code {}: {}",
                e.code, e.message
            )),
            Ok(e) => ReplyVerdict::Answer(e),
            Err(m) => ReplyVerdict::Retry {
                reason: m,
                retry_after: None,
            },
        },
        _ => ReplyVerdict::Refused(format!("the API refused the query: {}", message())),
    }
}

/// Classify one task query attempt ([`reply`], then the task's state from its `result`).
pub(crate) fn query(answer: QueryAnswer) -> QueryVerdict {
    match reply(answer) {
        ReplyVerdict::Answer(e) => match e.task() {
            Some(r) => QueryVerdict::Answer(r),
            None => QueryVerdict::Retry {
                reason: "the API answered success without a result".into(),
                retry_after: None,
            },
        },
        ReplyVerdict::Retry {
            reason,
            retry_after,
        } => QueryVerdict::Retry {
            reason,
            retry_after,
        },
        ReplyVerdict::Refused(m) => QueryVerdict::Refused(m),
        ReplyVerdict::Unauthorized(m) => QueryVerdict::Unauthorized(m),
    }
}

/// What a download's HTTP status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DownloadVerdict {
    /// The body is the image.
    Image,
    /// Worth another attempt.
    Retry,
    /// A failure recorded for the image.
    Failed,
}

/// Classify a download's HTTP status (a transport failure is always retried).
pub(crate) fn download(status: u16) -> DownloadVerdict {
    match status {
        200..=299 => DownloadVerdict::Image,
        s if transient(s) => DownloadVerdict::Retry,
        _ => DownloadVerdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Envelope, Submitted};

    /// An envelope as the simulator writes it, read back as the client reads any answer.
    fn read<T: serde::Serialize>(envelope: Envelope<T>) -> Result<Reply, String> {
        Reply::read(&serde_json::to_vec(&envelope).unwrap())
    }

    /// No `--retry-code`.
    fn none() -> BTreeSet<i64> {
        BTreeSet::new()
    }

    fn answered(status: u16, body: Result<Reply, String>) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: Some(Duration::from_secs(3)),
            envelope: body,
        }
    }

    fn env(code: i64, task: Option<&str>) -> Result<Reply, String> {
        read(Envelope {
            code,
            message: if code == 0 {
                "Success".into()
            } else {
                "bad resolution".into()
            },
            request_id: None,
            result: task.map(|t| Submitted {
                task_id: t.into(),
                sub_task_ids: vec![format!("{t}-0")],
            }),
        })
    }

    #[test]
    fn success_with_task_id_is_submitted() {
        assert_eq!(
            submission(answered(200, env(0, Some("t1"))), &none()),
            Verdict::Submitted {
                task_id: "t1".into(),
                sub_task_ids: vec!["t1-0".into()]
            }
        );
    }

    #[test]
    fn success_without_task_id_or_unreadable_is_unknown() {
        assert!(matches!(
            submission(answered(200, env(0, None)), &none()),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            submission(answered(200, Err("html".into())), &none()),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn ids_that_cannot_be_recorded_as_sent_are_unknown_and_named_escaped() {
        let answer = |task: &str, sub: &str| {
            let e = read(Envelope {
                code: 0,
                message: "Success".into(),
                request_id: None,
                result: Some(Submitted {
                    task_id: task.into(),
                    sub_task_ids: vec![sub.into()],
                }),
            });
            submission(answered(200, e), &none())
        };
        for (task, sub) in [
            ("t\n1", "s"),
            ("t\u{1b}[31m", "s"),
            ("t", "s\r"),
            ("t", "a;b"),
        ] {
            match answer(task, sub) {
                Verdict::Unknown { reason } => {
                    assert!(!reason.chars().any(char::is_control), "{reason:?}");
                    assert!(reason.contains("cannot be recorded"), "{reason}");
                }
                other => panic!("{task:?} {sub:?}: {other:?}"),
            }
        }
        match answer("t\u{1b}x", "s") {
            Verdict::Unknown { reason } => assert!(reason.contains("`t\\u{1b}x`"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // A formula-looking id is recorded: the results guard their cells (`results::cell_escape`).
        assert!(matches!(answer("=1+1", "@x"), Verdict::Submitted { .. }));
    }

    #[test]
    fn business_error_is_rejected_with_code() {
        assert_eq!(
            submission(answered(200, env(1001, None)), &none()),
            Verdict::Rejected {
                code: Some(1001),
                message: "bad resolution".into()
            }
        );
    }

    /// `--retry-code`: a 2xx refusal with a listed code is transient (no task was created); any
    /// other code is still a refusal, and a listed code outside a 2xx answer too.
    #[test]
    fn a_listed_business_code_is_retried_not_rejected() {
        let listed = BTreeSet::from([2001, 1001]);
        assert_eq!(
            submission(answered(200, env(1001, None)), &listed),
            Verdict::Retry {
                reason: "bad resolution".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            submission(answered(200, env(1999, None)), &listed),
            Verdict::Rejected {
                code: Some(1999),
                ..
            }
        ));
        assert!(matches!(
            submission(answered(400, env(1001, None)), &listed),
            Verdict::Rejected {
                code: Some(1001),
                ..
            }
        ));
        // Success stays success, whatever is listed.
        assert!(matches!(
            submission(answered(200, env(0, Some("t1"))), &listed),
            Verdict::Submitted { .. }
        ));
    }

    #[test]
    fn auth_failures_stop() {
        for s in [401, 403] {
            assert!(
                matches!(
                    submission(answered(s, env(1, None)), &none()),
                    Verdict::Unauthorized { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn transient_statuses_retry_with_retry_after() {
        for s in [408, 429, 500, 501, 502, 503, 507] {
            match submission(answered(s, Err("x".into())), &none()) {
                Verdict::Retry { retry_after, .. } => {
                    assert_eq!(retry_after, Some(Duration::from_secs(3)))
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_gateway_timeout_is_unknown() {
        for s in [504, 520, 524, 598, 599] {
            assert!(
                matches!(
                    submission(answered(s, Err("x".into())), &none()),
                    Verdict::Unknown { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_rejected() {
        for s in [400, 404, 409, 413, 422, 301] {
            assert!(
                matches!(
                    submission(answered(s, Err("x".into())), &none()),
                    Verdict::Rejected { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn transport_errors() {
        assert!(matches!(
            submission(Attempt::NotSent("refused".into()), &none()),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            submission(Attempt::NoAnswer("timeout".into()), &none()),
            Verdict::Unknown { .. }
        ));
    }

    fn query_env(code: i64, result: Option<TaskResult>) -> Result<Reply, String> {
        read(Envelope {
            code,
            message: "m".into(),
            request_id: None,
            result,
        })
    }

    #[test]
    fn query_answers_are_classified() {
        let ok = TaskResult {
            task_id: None,
            sub_task_results: vec![],
        };
        assert!(matches!(
            query(Ok((200, None, query_env(0, Some(ok))))),
            QueryVerdict::Answer(_)
        ));
        assert!(matches!(
            query(Ok((200, None, query_env(1101, None)))),
            QueryVerdict::Refused(_)
        ));
        assert!(matches!(
            query(Ok((404, None, Err("x".into())))),
            QueryVerdict::Refused(_)
        ));
        assert!(matches!(
            query(Ok((401, None, Err("x".into())))),
            QueryVerdict::Unauthorized(_)
        ));
        match query(Ok((429, Some(Duration::from_secs(2)), Err("x".into())))) {
            QueryVerdict::Retry { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)))
            }
            _ => panic!("429 is retried"),
        }
        assert!(matches!(
            query(Err(Attempt::NoAnswer("timeout".into()))),
            QueryVerdict::Retry { .. }
        ));
        assert!(matches!(
            query(Ok((200, None, query_env(0, None)))),
            QueryVerdict::Retry { .. }
        ));
    }

    #[test]
    fn the_three_share_the_transient_rule() {
        for s in [408, 429, 500, 502, 503, 507] {
            assert!(transient(s), "{s}");
            assert_eq!(download(s), DownloadVerdict::Retry, "{s}");
        }
        for s in [400, 404, 301] {
            assert!(!transient(s), "{s}");
            assert_eq!(download(s), DownloadVerdict::Failed, "{s}");
        }
        assert_eq!(download(200), DownloadVerdict::Image);
    }
}
