//! `run` (being written).

/// `--rate` default: the API's documented text-to-image limit.
pub const DEFAULT_RATE: u32 = crate::api::DOCUMENTED_TXT2IMG_RATE;
