//! The write-ahead log, `<results>.wal`: which attempts left this process, so that a run that
//! dies with requests in flight never forgets them.
//!
//! One line per event, appended:
//!
//! ```text
//! sent <request id> <attempt> <at> <first at> <api|simulator> <kind> <job>
//! noted <request id> <attempt> <what>
//! done <request id>
//! ```
//!
//! - `sent`: attempt `attempt` of a request is about to leave. `first at` is the time of the
//!   request's first attempt in this run, which its outcome row carries as `submitted_at`.
//! - `noted`: that attempt was answered in a way that proves no task was created (`what`: the HTTP
//!   status; `status:code` for a 2xx refusal retried for its code, `--retry-code`; or `not-sent`
//!   when no complete request left). A request whose every attempt in the
//!   entry is noted is `failed` (sent again), not `unknown`, if the run dies before it gets its
//!   row; one attempt without a `noted` line (it may have created a task) keeps it `unknown`.
//! - `done`: the request's outcome row is on disk.
//!
//! An *open entry* is a request with a `sent` line and no `done` line after it.
//!
//! The lines are written by the journal's one writer thread (`writer.rs`).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use uuid::Uuid;

use crate::api::Kind;
use crate::results::World;

/// A `sent` line: one attempt of a request, about to leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub id: Uuid,
    pub attempt: u32,
    /// When this attempt went (RFC 3339).
    pub at: String,
    /// When the request's first attempt in its run went: its row's `submitted_at`.
    pub first_at: String,
    pub world: World,
    /// `None` in a log written before kinds were logged.
    pub kind: Option<Kind>,
    /// The job, for messages (empty if not logged).
    pub job: String,
}

impl Sent {
    #[cfg(test)]
    fn line(&self) -> String {
        SentLine {
            id: self.id,
            attempt: self.attempt,
            at: &self.at,
            first_at: &self.first_at,
            world: self.world,
            kind: self.kind,
            job: &self.job,
        }
        .line()
    }
}

/// A `sent` line to write, borrowing what it says from the submission (one allocation: the line).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SentLine<'a> {
    pub id: Uuid,
    pub attempt: u32,
    pub at: &'a str,
    pub first_at: &'a str,
    pub world: World,
    pub kind: Option<Kind>,
    pub job: &'a str,
}

impl SentLine<'_> {
    pub(super) fn line(&self) -> String {
        let kind = self.kind.map_or("-", Kind::as_str);
        // Job ids have no spaces (validation sees to it); a line must stay one field per word.
        let job: std::borrow::Cow<'_, str> = if self.job.is_empty() {
            "-".into()
        } else if self.job.contains(char::is_whitespace) {
            self.job.replace(char::is_whitespace, "_").into()
        } else {
            self.job.into()
        };
        format!(
            "sent {} {} {} {} {} {kind} {job}\n",
            self.id,
            self.attempt,
            self.at,
            self.first_at,
            self.world.as_str(),
        )
    }
}

/// A request whose last `sent` line has no `done` after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Its last attempt.
    pub sent: Sent,
    /// What proved that last attempt created no task, if anything did.
    pub noted: Option<String>,
    /// An earlier attempt of the entry was not noted: it may have created a task.
    pub earlier_unnoted: bool,
}

impl Entry {
    /// Whether no attempt of the entry can have created a task.
    pub(super) fn no_task(&self) -> bool {
        self.noted.is_some() && !self.earlier_unnoted
    }
}

/// A line of the log that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unreadable {
    pub line: u64,
    pub what: String,
}

/// The open entries of a log, in the order their requests were first sent. A last line without
/// its line end was torn by a crash before it was synced (so its request never left) and is
/// ignored; any other line that cannot be read is an error.
pub(super) fn read(path: &Path) -> io::Result<Result<Vec<Entry>, Unreadable>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(Vec::new())),
        Err(e) => return Err(e),
    };
    Ok(parse(&bytes))
}

pub(super) fn parse(bytes: &[u8]) -> Result<Vec<Entry>, Unreadable> {
    let mut open: HashMap<Uuid, Entry> = HashMap::new();
    let mut order: Vec<Uuid> = Vec::new();
    // The text ends at the first zero byte (the zeros laid down ahead of it).
    let bytes = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[][..],
    };
    for (n, raw) in complete.split(|&b| b == b'\n').enumerate() {
        let line = n as u64 + 1;
        if raw.is_empty() {
            continue;
        }
        let bad = |what: String| Unreadable { line, what };
        let text = std::str::from_utf8(raw).map_err(|_| bad("the line is not UTF-8".into()))?;
        let fields: Vec<&str> = text.split(' ').collect();
        let id = fields
            .get(1)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| bad(format!("`{}` is not a write-ahead line", safe(text))))?;
        let number = |i: usize| -> Result<u32, Unreadable> {
            fields
                .get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("`{}` has no attempt number", safe(text))))
        };
        match fields[0] {
            "sent" => {
                let attempt = number(2)?;
                let at = fields.get(3).copied().unwrap_or("").to_string();
                // Lines before kinds were logged end after the time.
                let first_at = fields.get(4).map_or_else(|| at.clone(), |s| s.to_string());
                let world = match fields.get(5) {
                    None => World::Api,
                    Some(w) => World::parse(w)
                        .ok_or_else(|| bad(format!("`{}`: unknown server `{w}`", safe(text))))?,
                };
                let kind = fields.get(6).and_then(|k| Kind::parse(k));
                let job = fields
                    .get(7..)
                    .map(|j| j.join(" "))
                    .filter(|j| j != "-")
                    .unwrap_or_default();
                let sent = Sent {
                    id,
                    attempt,
                    at,
                    first_at,
                    world,
                    kind,
                    job,
                };
                match open.get_mut(&id) {
                    Some(e) => {
                        e.earlier_unnoted |= e.noted.is_none();
                        e.sent = sent;
                        e.noted = None;
                    }
                    None => {
                        let entry = Entry {
                            sent,
                            noted: None,
                            earlier_unnoted: false,
                        };
                        open.insert(id, entry);
                        order.push(id);
                    }
                }
            }
            "noted" => {
                let attempt = number(2)?;
                if let Some(e) = open.get_mut(&id)
                    && e.sent.attempt == attempt
                {
                    e.noted = Some(fields.get(3).copied().unwrap_or("answered").to_string());
                }
            }
            "done" => {
                open.remove(&id);
            }
            _ => return Err(bad(format!("`{}` is not a write-ahead line", safe(text)))),
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect())
}

fn safe(text: &str) -> String {
    let shown: String = text.chars().take(120).collect();
    crate::logging::safe(&shown).into_owned()
}

/// A `sent` line for tests: request `id`, attempt `attempt`, of job `hero`.
#[cfg(test)]
pub(super) fn sample(id: u128, attempt: u32) -> Sent {
    Sent {
        id: Uuid::from_u128(id),
        attempt,
        at: format!("2026-12-01T00:00:0{attempt}.000Z"),
        first_at: "2026-12-01T00:00:01.000Z".into(),
        world: World::Api,
        kind: Some(Kind::Txt2Img),
        job: "hero".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::sample as sent;
    use super::*;

    #[test]
    fn lines_round_trip_and_entries_close_with_done() {
        let a = sent(1, 1);
        let mut b = sent(2, 1);
        b.world = World::Simulator;
        b.kind = Some(Kind::Model);
        let b2 = Sent {
            attempt: 2,
            at: "2026-12-01T00:00:09.000Z".into(),
            ..b.clone()
        };
        let c = sent(3, 1);
        let text = format!(
            "{}{}noted {} 1 500\n{}{}noted {} 1 429\ndone {}\n",
            a.line(),
            b.line(),
            b.id,
            b2.line(),
            c.line(),
            c.id,
            a.id
        );
        let open = parse(text.as_bytes()).unwrap();
        assert_eq!(
            open,
            vec![
                // b's second attempt was not answered; the 500 belongs to the first.
                Entry {
                    sent: b2,
                    noted: None,
                    earlier_unnoted: false,
                },
                Entry {
                    sent: c,
                    noted: Some("429".into()),
                    earlier_unnoted: false,
                },
            ]
        );
        assert!(!open[0].no_task() && open[1].no_task());
        // An attempt that went unanswered, then one answered 503: a task may exist.
        let d = sent(4, 1);
        let d2 = Sent {
            attempt: 2,
            ..d.clone()
        };
        let text = format!("{}{}noted {} 2 503\n", d.line(), d2.line(), d.id);
        let open = parse(text.as_bytes()).unwrap();
        assert!(open[0].earlier_unnoted && !open[0].no_task());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_is_an_error() {
        let a = sent(1, 1);
        let torn = format!("{}sent {} 1 2026", a.line(), Uuid::from_u128(2));
        assert_eq!(parse(torn.as_bytes()).unwrap().len(), 1);
        let bad = format!("garbage\n{}", a.line());
        assert_eq!(parse(bad.as_bytes()).unwrap_err().line, 1);
        let mut not_utf8 = a.line().into_bytes();
        not_utf8.extend_from_slice(b"sent \xff\n");
        assert_eq!(parse(&not_utf8).unwrap_err().line, 2);
    }

    #[test]
    fn the_text_ends_at_the_zeros_laid_down_ahead() {
        let a = sent(1, 1);
        let mut bytes = a.line().into_bytes();
        bytes.extend_from_slice(b"sent 00000000-0000-0000-0000-00000000"); // torn by a power cut
        bytes.extend(std::iter::repeat_n(0u8, 64));
        bytes.extend_from_slice(sent(2, 1).line().as_bytes()); // never synced: past the zeros
        let open = parse(&bytes).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].sent, a);
    }

    #[test]
    fn a_log_written_before_kinds_were_logged_reads() {
        let id = Uuid::from_u128(9);
        let open = parse(format!("sent {id} 2 2026-11-01T00:00:00.000Z\n").as_bytes()).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].sent.first_at, "2026-11-01T00:00:00.000Z");
        assert_eq!(open[0].sent.world, World::Api);
        assert_eq!(open[0].sent.kind, None);
    }
}
