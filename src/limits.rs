//! Every bound hidream-batch puts on what it reads, in one place; README "Limits" is the same table.
//!
//! A manifest comes from a spreadsheet someone else edited and an answer from a server we do not
//! control, so nothing is read without a bound: each input is measured against its limit before
//! the work it would cost is done (a file's size before it is read, a YAML file's nesting before
//! the YAML parser sees it, its size with aliases expanded before anything is built from it, a
//! CSV's rows and columns while it is copied), and exceeding one is a problem (exit 2) that names
//! the file, the place and the limit. Time and memory stay bounded by these figures whatever the
//! input.
//!
//! The retry side has its own bound: a `Retry-After` is never waited longer than `--backoff-max`
//! ([`crate::retry::Backoff`]).

/// The largest YAML manifest file. YAML manifests are written by hand (sweeps: a few jobs, each a
/// matrix or a `for_each` table); many rows belong in a CSV manifest or a `for_each` table, which
/// are streamed.
pub const YAML_FILE_BYTES: u64 = 8 << 20;

/// The most values a YAML manifest holds once its aliases are expanded: every scalar, list and
/// mapping counts, an alias as many times as it is used (a "billion laughs" file stops here).
pub const YAML_VALUES: u64 = 1_000_000;

/// The most text a YAML manifest's scalars hold once its aliases are expanded.
pub const YAML_TEXT_BYTES: u64 = 64 << 20;

/// The deepest nesting of lists and mappings in a YAML manifest. A manifest needs 5 (`jobs` →
/// job → `matrix` → variable → values); the YAML parser's time grows with the square of the
/// nesting of `[`/`{` collections, so deeper text is refused before it is parsed.
pub const YAML_DEPTH: usize = 32;

/// The most jobs in a YAML manifest (each job is validated and kept whole while the manifest is
/// loaded; a sweep of more requests is a matrix, a `for_each` table or a CSV manifest).
pub const YAML_JOBS: usize = 100_000;

/// The largest CSV file (a CSV manifest or a `for_each` table). CSV is never held in memory: it is
/// copied once to a private temporary file and streamed from there.
pub const CSV_FILE_BYTES: u64 = 1 << 30;

/// The most columns of a CSV file (the header included).
pub const CSV_COLUMNS: usize = 1_000;

/// The most data rows of a CSV file.
pub const CSV_ROWS: u64 = 10_000_000;

/// The largest CSV row, in bytes (one row is read into memory at a time): room for an inline
/// image at its bound, in base64, and the row's text. Excel itself keeps a cell under 32,767
/// characters.
pub const CSV_ROW_BYTES: u64 = 16 << 20;

/// The largest inline (`data:` URI or bare base64) image, decoded. An inline image lives in the
/// manifest, so it is held in memory with it; a larger image belongs in a file, which is streamed
/// when it is sent.
pub const INLINE_IMAGE_BYTES: u64 = 8 << 20;

/// The longest text-to-image `prompt` or `negative_prompt`, in characters. The API states no
/// bound for text-to-image; its model-image and other e-commerce endpoints take at most 500
/// characters, and the open HiDream-I1 model reads only the first few hundred tokens of a prompt.
/// 2,000 characters is four times the documented sibling bound: no prompt the model reads is
/// refused, and a cell that swallowed a whole paragraph or a shifted column is caught before it
/// is paid for.
pub const TXT2IMG_PROMPT_CHARS: usize = 2_000;

/// The largest local image a request may carry. The API documents pixels (at most 4096 a side),
/// not bytes: a 4096 × 4096 PNG of RGBA pixels stored without compression is 64 MiB, so no image
/// the API accepts needs more, and the base64 of one (85 MiB) is already a very large request.
pub const IMAGE_FILE_BYTES: u64 = 64 << 20;

/// The largest API answer read into memory. The API's answers are small JSON envelopes (a task
/// id, a few image URLs); anything larger is not read further: a success that large is `unknown`
/// (its task id cannot be read), any other status is classified by its status alone.
pub const ANSWER_BYTES: usize = 1 << 20;

/// The largest image `collect` downloads. The API makes images of at most 4096 px a side (a PNG
/// that size is at most about 64 MiB uncompressed); a server that sends more is not sending an
/// image, and that image fails (the others go on).
pub const DOWNLOAD_BYTES: usize = 100 << 20;

/// The most pages of a template list read (at 100 templates a page, the most the API serves, ten
/// thousand templates). A `total_page` above it, or pages that never end, stop the read with an
/// error instead of a loop.
pub const TEMPLATE_PAGES: u32 = 100;

/// The most templates of one list kept (the API lists a few dozen of each kind today).
pub const TEMPLATES: usize = 10_000;

/// A byte count as people read it: `8 MiB`, `1 GiB`, `1024 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 3] = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if n >= 1 << shift && n.trailing_zeros() >= shift {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_written() {
        assert_eq!(bytes(YAML_FILE_BYTES), "8 MiB");
        assert_eq!(bytes(CSV_FILE_BYTES), "1 GiB");
        assert_eq!(bytes(ANSWER_BYTES as u64), "1 MiB");
        assert_eq!(bytes(1536), "1536 bytes");
        assert_eq!(bytes(3 << 10), "3 KiB");
    }
}
