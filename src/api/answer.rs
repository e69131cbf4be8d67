//! Reading the API's answers as it may really send them: field by field, leniently where the
//! documentation is vague, strictly where money is at stake (README "Outcomes").
//!
//! The error-code table is not published and no refusal of the real API has been seen, so an
//! answer is not matched against one shape. [`Reply::read`] takes any JSON object and reads:
//!
//! - `code`: a number, or a string of digits. Without a readable `code` the answer is not the
//!   API's envelope (an error naming a short excerpt of the body).
//! - the message: `message`, else `messasge` (sic: a newer HiDream gateway documents it so, and
//!   clients accept both), else `msg`, else an excerpt of the body.
//! - `result`: kept as JSON, whatever it is (`{}`, `null`, missing, a list, a string). It is read
//!   only when it matters: [`Reply::submitted`] when `code == 0` (the task id; without one the
//!   outcome stays unknown: the task may exist), [`Reply::task`] for a task query.
//!
//! A task query's `result` is read the same way: `sub_task_results` missing or not a list is
//! empty; in each entry `task_status` is a number or a string of digits (anything else is
//! [`UNREADABLE_STATUS`], polled again, never taken for done); an entry without a `sub_task_id`
//! is named by its place (`#0`); `image` null or empty is no image;
//! the failure reason is `description`, else `error_msg`; unknown fields are ignored.

use serde_json::{Map, Value};

use super::{SubTaskResult, Submitted, TaskResult};

/// An answer's envelope, read leniently.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The API's status code: 0 is success, anything else a refusal.
    pub code: i64,
    /// The API's message (or an excerpt of the body when it has none).
    pub message: String,
    /// The payload, as sent (`Value::Null` when missing).
    pub result: Value,
}

/// The envelope's fields that [`Reply::read`] reads (`null` reads as missing).
#[derive(serde::Deserialize)]
struct Fields {
    code: Option<Value>,
    message: Option<Value>,
    messasge: Option<Value>,
    msg: Option<Value>,
    result: Option<Value>,
}

/// The `task_status` recorded for an entry whose status cannot be read: not a known status, so
/// the task is polled again and never taken for done.
pub const UNREADABLE_STATUS: i64 = -1;

/// The longest excerpt of a body shown in a message, in characters.
const EXCERPT_CHARS: usize = 160;

impl Reply {
    /// Read an answer's body. The error is a message with a short, escaped excerpt of the body.
    pub fn read(body: &[u8]) -> Result<Reply, String> {
        let not_envelope = || {
            format!(
                "the answer is not the API's JSON envelope: {}",
                excerpt(body)
            )
        };
        // The fields read, straight from the body (the others are skipped, not built); a body
        // that is not one object with each key once is read as a whole value, with the same
        // result.
        let fields = match body.trim_ascii_start().first() {
            Some(b'{') => serde_json::from_slice::<Fields>(body).ok(),
            _ => None,
        };
        let fields = match fields {
            Some(f) => f,
            None => {
                let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
                    return Err(not_envelope());
                };
                let mut take = |k: &str| map.remove(k);
                Fields {
                    code: take("code"),
                    message: take("message"),
                    messasge: take("messasge"),
                    msg: take("msg"),
                    result: take("result"),
                }
            }
        };
        let code = fields
            .code
            .as_ref()
            .and_then(integer)
            .ok_or_else(not_envelope)?;
        let message = [&fields.message, &fields.messasge, &fields.msg]
            .into_iter()
            .find_map(|v| v.as_ref().and_then(text).filter(|m| !m.is_empty()))
            .unwrap_or_else(|| excerpt(body));
        Ok(Reply {
            code,
            message,
            result: fields.result.unwrap_or(Value::Null),
        })
    }

    /// An accepted submission's ids: `result.task_id` (a string, or a number written as one) and
    /// `result.sub_task_ids` (a list of them; missing is empty). `None` without a task id.
    pub fn submitted(&self) -> Option<Submitted> {
        let result = self.result.as_object()?;
        let task_id = result
            .get("task_id")
            .and_then(id)
            .filter(|t| !t.is_empty())?;
        let sub_task_ids = match result.get("sub_task_ids") {
            Some(Value::Array(ids)) => ids.iter().filter_map(id).collect(),
            _ => Vec::new(),
        };
        Some(Submitted {
            task_id,
            sub_task_ids,
        })
    }

    /// A task query's result. `None` when `result` is not an object (no state to read).
    pub fn task(&self) -> Option<TaskResult> {
        let result = self.result.as_object()?;
        let sub_task_results = match result.get("sub_task_results") {
            Some(Value::Array(entries)) => entries
                .iter()
                .filter_map(Value::as_object)
                .enumerate()
                .map(|(i, entry)| sub_task(i, entry))
                .collect(),
            _ => Vec::new(),
        };
        Some(TaskResult {
            task_id: result.get("task_id").and_then(id),
            sub_task_results,
        })
    }
}

/// Entry `i` of `sub_task_results`; without a `sub_task_id` it is named by its place (`#0`),
/// so that two such entries stay two images.
fn sub_task(i: usize, entry: &Map<String, Value>) -> SubTaskResult {
    SubTaskResult {
        sub_task_id: entry
            .get("sub_task_id")
            .and_then(id)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("#{i}")),
        task_status: entry
            .get("task_status")
            .and_then(integer)
            .unwrap_or(UNREADABLE_STATUS),
        task_completion: entry.get("task_completion").and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }),
        image: entry
            .get("image")
            .and_then(text)
            .filter(|s| !s.trim().is_empty()),
        description: ["description", "error_msg"]
            .iter()
            .find_map(|k| entry.get(*k).and_then(text))
            .filter(|s| !s.is_empty()),
    }
}

/// A whole number, or a string of digits (with an optional sign).
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An id: a string, or a whole number written as one.
fn id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Text: a string as is, a number or a boolean written out; nothing for null, lists and maps.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A short excerpt of a body for a message: an HTML page by its title (or its text without
/// tags), whitespace collapsed, at most [`EXCERPT_CHARS`] characters, control characters escaped.
pub fn excerpt(body: &[u8]) -> String {
    let raw = String::from_utf8_lossy(&body[..body.len().min(64 << 10)]);
    let lower = raw.to_ascii_lowercase();
    let html = lower.trim_start().starts_with('<') || lower.contains("<html");
    let text: String = if !html {
        raw.into_owned()
    } else if let (Some(a), Some(b)) = (lower.find("<title>"), lower.find("</title>"))
        && a + 7 <= b
    {
        format!("an HTML page: {}", &raw[a + 7..b])
    } else {
        let mut out = String::from("an HTML page: ");
        let mut in_tag = false;
        for c in raw.chars() {
            match c {
                '<' => in_tag = true,
                '>' => {
                    in_tag = false;
                    out.push(' ');
                }
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    };
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if collapsed.chars().count() > EXCERPT_CHARS {
        short.push('…');
    }
    if short.is_empty() {
        short = "(an empty body)".into();
    }
    crate::logging::safe(&short).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> Result<Reply, String> {
        Reply::read(body.as_bytes())
    }

    #[test]
    fn a_refusal_is_read_whatever_its_result_holds() {
        for result in ["{}", "null", "[]", "\"\"", "{\"task_id\": \"\"}"] {
            let r = reply(&format!(
                "{{\"code\": 1999, \"message\": \"积分不足\", \"request_id\": \"\", \"result\": {result}}}"
            ))
            .unwrap();
            assert_eq!((r.code, r.message.as_str()), (1999, "积分不足"), "{result}");
        }
        let r = reply("{\"code\": \"2001\", \"messasge\": \"任务数超限\"}").unwrap();
        assert_eq!((r.code, r.message.as_str()), (2001, "任务数超限"));
        assert_eq!(r.result, Value::Null);
        let r = reply("{\"code\": 7, \"msg\": \"busy\", \"extra\": [1]}").unwrap();
        assert_eq!(r.message, "busy");
        let r = reply("{\"code\": 7}").unwrap();
        assert_eq!(r.message, "{\"code\": 7}", "no message: the body");
    }

    #[test]
    fn a_success_needs_its_task_id_and_reads_ids_as_text() {
        let r = reply(
            "{\"code\": 0, \"result\": {\"task_id\": 123, \"sub_task_ids\": [\"a\", 4, null]}}",
        )
        .unwrap();
        let s = r.submitted().unwrap();
        assert_eq!(
            (s.task_id.as_str(), s.sub_task_ids.clone()),
            ("123", vec!["a".into(), "4".into()])
        );
        for result in [
            "{}",
            "null",
            "{\"task_id\": \"\"}",
            "{\"task_id\": null}",
            "[\"t\"]",
        ] {
            let r = reply(&format!("{{\"code\": 0, \"result\": {result}}}")).unwrap();
            assert_eq!(r.submitted(), None, "{result}");
        }
    }

    /// The reading of before the fast path: the whole body as one JSON value.
    fn read_whole(body: &[u8]) -> Result<Reply, String> {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
            return Err(format!(
                "the answer is not the API's JSON envelope: {}",
                excerpt(body)
            ));
        };
        let code = map.get("code").and_then(integer).ok_or_else(|| {
            format!(
                "the answer is not the API's JSON envelope: {}",
                excerpt(body)
            )
        })?;
        let message = ["message", "messasge", "msg"]
            .iter()
            .find_map(|k| map.get(*k).and_then(text).filter(|m| !m.is_empty()))
            .unwrap_or_else(|| excerpt(body));
        let result = map.remove("result").unwrap_or(Value::Null);
        Ok(Reply {
            code,
            message,
            result,
        })
    }

    proptest::proptest! {
        /// Reading only the envelope's fields gives what reading the whole body gave, for any
        /// object of those keys (each possibly twice: the last one counts), and for a list.
        #[test]
        fn reading_the_fields_is_reading_the_whole_body(
            entries in proptest::collection::vec((0usize..6, 0usize..7), 0..8),
            list in proptest::bool::ANY,
        ) {
            const KEYS: [&str; 6] = ["code", "message", "messasge", "msg", "result", "request_id"];
            const VALUES: [&str; 7] =
                ["0", "\"1101\"", "null", "\"busy\"", "\"\"", "{\"task_id\": \"t\"}", "[1, \"a\"]"];
            let body = if list {
                format!("[{}]", entries.iter().map(|(_, v)| VALUES[*v]).collect::<Vec<_>>().join(", "))
            } else {
                let pairs: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("\"{}\": {}", KEYS[*k], VALUES[*v]))
                    .collect();
                format!(" {{{}}}", pairs.join(", "))
            };
            proptest::prop_assert_eq!(Reply::read(body.as_bytes()), read_whole(body.as_bytes()), "{}", body);
        }
    }

    #[test]
    fn bodies_that_are_not_the_envelope_are_summarised() {
        let page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>502</h1>\u{1b}[31m</body></html>";
        assert_eq!(
            reply(page).unwrap_err(),
            "the answer is not the API's JSON envelope: an HTML page: 502 Bad Gateway"
        );
        let untitled = "<html><body><h1>Service\n   Unavailable</h1></body></html>";
        assert_eq!(
            excerpt(untitled.as_bytes()),
            "an HTML page: Service Unavailable"
        );
        assert!(
            reply("{\"message\": \"no code\"}")
                .unwrap_err()
                .contains("no code")
        );
        assert!(
            reply("{\"code\": \"ok\"}").is_err(),
            "a code that is not a number"
        );
        let long = "x".repeat(1000);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt(b"\x1b]0;title\x07"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(excerpt(b""), "(an empty body)");
    }

    #[test]
    fn a_task_is_read_field_by_field() {
        let r = reply(
            "{\"code\": 0, \"result\": {\"sub_task_results\": [
                {\"sub_task_id\": \"s0\", \"task_status\": \"1\", \"image\": \"https://x/a.png\", \"task_completion\": \"1.0\", \"new\": 1},
                {\"sub_task_id\": \"s1\", \"task_status\": 3, \"image\": \"\", \"error_msg\": \"nsfw\"},
                {\"sub_task_id\": \"s2\", \"task_status\": \"done?\", \"image\": null, \"description\": \"d\", \"error_msg\": \"e\"},
                \"junk\"
            ]}}",
        )
        .unwrap();
        let t = r.task().unwrap().sub_task_results;
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].task_status, t[0].image.as_deref()),
            (1, Some("https://x/a.png"))
        );
        assert_eq!(t[0].task_completion, Some(1.0));
        assert_eq!(
            (t[1].image.as_deref(), t[1].description.as_deref()),
            (None, Some("nsfw"))
        );
        assert_eq!(
            (t[2].task_status, t[2].description.as_deref()),
            (UNREADABLE_STATUS, Some("d"))
        );
        for result in [
            "{}",
            "{\"sub_task_results\": null}",
            "{\"sub_task_results\": {}}",
        ] {
            let r = reply(&format!("{{\"code\": 0, \"result\": {result}}}")).unwrap();
            assert_eq!(r.task().unwrap().sub_task_results, vec![], "{result}");
        }
        assert_eq!(
            reply("{\"code\": 0, \"result\": null}").unwrap().task(),
            None
        );
    }
}
