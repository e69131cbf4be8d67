//! `DIR/images.csv`: what an earlier `collect` recorded (read back, so a rerun asks nothing about
//! settled images) and what this one writes (rewritten atomically, one row per image).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::batch::{Batch, LEADING, Sub, SubStatus, existing, stem};
use crate::results::{cell_escape, cell_unescape, no_formula};

/// What an earlier `collect` recorded about one sub-task.
pub(super) struct Prev {
    sub_task_id: String,
    status: SubStatus,
    url: String,
    message: String,
}

/// The rows of an earlier `images.csv`, per task id, in file order. A missing file is no history;
/// an unreadable one is ignored with a warning (the images on disk are still found by name).
pub(super) fn read_previous(path: &Path) -> HashMap<String, Vec<Prev>> {
    let mut out: HashMap<String, Vec<Prev>> = HashMap::new();
    let mut reader = match csv::ReaderBuilder::new().flexible(true).from_path(path) {
        Ok(r) => r,
        Err(e) => {
            if !matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == io::ErrorKind::NotFound) {
                tracing::warn!("ignoring `{}`: {e}", path.display());
            }
            return out;
        }
    };
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            tracing::warn!("ignoring `{}`: {e}", path.display());
            return out;
        }
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(c_task), Some(c_sub), Some(c_status)) =
        (col("task_id"), col("sub_task_id"), col("status"))
    else {
        tracing::warn!(
            "ignoring `{}`: it is not an images.csv of `collect`",
            path.display()
        );
        return out;
    };
    let (c_url, c_message) = (col("url"), col("message"));
    for record in reader.records() {
        let Ok(record) = record else {
            tracing::warn!("ignoring an unreadable row of `{}`", path.display());
            continue;
        };
        let get = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let sub_task_id = cell_unescape(&get(Some(c_sub))).to_string();
        if sub_task_id.is_empty() {
            continue;
        }
        let task_id = cell_unescape(&get(Some(c_task))).to_string();
        out.entry(task_id).or_default().push(Prev {
            sub_task_id,
            status: SubStatus::parse(&get(Some(c_status))),
            url: get(c_url),
            message: get(c_message),
        });
    }
    out
}

/// Apply the earlier record: statuses, URLs and messages; the file of every done image that is
/// still on disk.
pub(super) fn merge(batch: &mut Batch, mut prev: HashMap<String, Vec<Prev>>, dir: &Path) {
    for task in &mut batch.tasks {
        let Some(rows) = prev.remove(&task.task_id) else {
            continue;
        };
        for p in rows {
            let i = match task.subs.iter().position(|s| s.id == p.sub_task_id) {
                Some(i) => i,
                None => {
                    let n = task.next_index();
                    task.subs.push(Sub::new(p.sub_task_id.clone(), n));
                    task.subs.len() - 1
                }
            };
            let sub = &mut task.subs[i];
            sub.status = p.status;
            sub.url = p.url;
            sub.message = p.message;
        }
        for sub in &mut task.subs {
            if sub.status.is_done() {
                sub.path = existing(dir, &stem(&task.job, &task.request_id, sub.index));
            }
        }
    }
}

/// Write `DIR/images.csv` atomically: one row per sub-task (a task with none known yet gets one
/// row with an empty `sub_task_id`), in the results' order.
pub(crate) fn write_images_csv(batch: &Batch, dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(super::IMAGES_CSV);
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = csv::Writer::from_writer(io::BufWriter::new(tmp.as_file()));
        let header = LEADING
            .iter()
            .map(|s| s.to_string())
            .chain(batch.vars.iter().cloned())
            .chain(batch.meta.iter().cloned());
        w.write_record(header)?;
        for t in &batch.tasks {
            let tail = t.vars.iter().chain(&t.meta).map(String::as_str);
            if t.subs.is_empty() {
                let lead = [
                    t.request_id.as_str(),
                    &t.job,
                    &cell_escape(t.task_id.as_str()),
                    "",
                    "unknown",
                    "",
                    "",
                    &no_formula(&t.message),
                ];
                w.write_record(lead.into_iter().chain(tail))?;
                continue;
            }
            for s in &t.subs {
                let status = s.status.name();
                let message = if s.message.is_empty() {
                    &t.message
                } else {
                    &s.message
                };
                let lead = [
                    t.request_id.as_str(),
                    &t.job,
                    &cell_escape(t.task_id.as_str()),
                    &cell_escape(s.id.as_str()),
                    &status,
                    &no_formula(&s.url),
                    s.path.as_deref().unwrap_or(""),
                    &no_formula(message),
                ];
                w.write_record(lead.into_iter().chain(tail.clone()))?;
            }
        }
        w.flush()?;
    }
    crate::journal::persist(tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn an_earlier_images_csv_settles_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("hero")).unwrap();
        std::fs::write(out.join("hero/a-0.png"), b"png").unwrap();
        let results = write(
            dir.path(),
            "r.csv",
            "request_id,job,kind,status,task_id,sub_task_ids\n\
             a,hero,txt2img,submitted,t1,t1-0;t1-1;t1-2\n",
        );
        write(
            &out,
            super::super::IMAGES_CSV,
            "request_id,job,task_id,sub_task_id,status,url,path,message\n\
             a,hero,t1,t1-0,done,http://x/0.png,hero/a-0.png,\n\
             a,hero,t1,t1-1,done,http://x/1.png,hero/a-1.png,\n\
             a,hero,t1,t1-2,refused,,,nope\n\
             a,hero,t1,t1-9,running,,,\n",
        );
        let mut b = super::super::batch::load(&results).unwrap();
        merge(
            &mut b,
            read_previous(&out.join(super::super::IMAGES_CSV)),
            &out,
        );
        let subs = &b.tasks[0].subs;
        assert_eq!(subs.len(), 4);
        assert_eq!(subs[0].path.as_deref(), Some("hero/a-0.png"));
        assert!(subs[0].settled());
        assert!(subs[1].path.is_none(), "its file is gone");
        assert!(!subs[1].settled());
        assert!(subs[2].settled() && subs[2].message == "nope");
        assert_eq!((subs[3].id.as_str(), subs[3].index), ("t1-9", 3));
        assert!(b.tasks[0].needs_query(true));
    }
}
