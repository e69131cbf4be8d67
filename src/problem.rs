//! Problems found in manifests before anything is sent: where (file, line and column, job, row),
//! which field, and what is wrong. Validation collects every problem at once and prints them all;
//! warnings use the same shape.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a manifest a problem is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum At {
    /// The file as a whole (it cannot be read, it has no jobs, …).
    File,
    /// A position in the YAML text (syntax and type errors), with the job when known.
    Text {
        line: usize,
        column: usize,
        job: Option<String>,
    },
    /// A job of a YAML manifest.
    Job(String),
    /// A job of a YAML manifest, at one row of its `for_each` CSV (1-based line).
    JobRow {
        job: String,
        file: String,
        line: u64,
    },
    /// A row of a CSV manifest (1-based line of the row's first line).
    CsvRow { line: u64, job: Option<String> },
}

/// One problem. `field` names the manifest field or CSV column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub file: PathBuf,
    pub at: At,
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn new(file: &Path, at: At, field: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_path_buf(),
            at,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    /// The same problem, without its row: used to fold a problem that repeats on every request of
    /// a job into one line.
    pub fn without_row(&self) -> Problem {
        let at = match &self.at {
            At::JobRow { job, .. } => At::Job(job.clone()),
            other => other.clone(),
        };
        Problem { at, ..self.clone() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.at {
            At::File => write!(f, "{file}")?,
            At::Text { line, column, job } => {
                write!(f, "{file}:{line}:{column}")?;
                if let Some(job) = job {
                    write!(f, ": job `{job}`")?;
                }
            }
            At::Job(job) => write!(f, "{file}: job `{job}`")?,
            At::JobRow {
                job,
                file: rows,
                line,
            } => write!(f, "{file}: job `{job}`, {rows} line {line}")?,
            At::CsvRow { line, job } => {
                write!(f, "{file}: line {line}")?;
                if let Some(job) = job {
                    write!(f, " (job `{job}`)")?;
                }
            }
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}
