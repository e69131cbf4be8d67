//! The settings of the template commands and checks: `templates`, `validate` (whose only use of
//! the network is `--check-templates`) and the check shared with `run`.

use std::path::PathBuf;

use super::{ConnectionSettings, ManifestSettings, connection, defaults, manifest};
use crate::api::TemplateList;
use crate::cli::{
    ConnectionArgs, TemplateCheckArgs, TemplateFormat, TemplateListArg, TemplatesArgs, ValidateArgs,
};

/// `--check-templates` and `--refresh-templates`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateCheck {
    /// Check the manifests' template ids against the API's lists before sending.
    pub check: bool,
    /// Read the lists from the API even if the cache has them.
    pub refresh: bool,
}

impl From<TemplateCheckArgs> for TemplateCheck {
    fn from(args: TemplateCheckArgs) -> TemplateCheck {
        TemplateCheck {
            check: args.check_templates,
            refresh: args.refresh_templates,
        }
    }
}

/// `validate`.
#[derive(Debug, Clone)]
pub struct ValidateSettings {
    /// The manifests.
    pub manifest: ManifestSettings,
    /// The template check.
    pub templates: TemplateCheck,
    /// Where the template lists are read (`--base-url`, `--simulate`; the defaults otherwise).
    pub connection: ConnectionSettings,
}

/// `templates`.
#[derive(Debug, Clone)]
pub struct TemplatesSettings {
    /// Which list.
    pub which: TemplateList,
    /// The server, the pace and the retries.
    pub connection: ConnectionSettings,
    /// How the list is printed.
    pub format: ListFormat,
    /// `--gallery DIR`.
    pub gallery: Option<PathBuf>,
    /// Templates per page asked (1–100).
    pub page_size: u32,
}

/// How `templates` prints its list (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// Aligned columns for a person.
    Table,
    /// CSV, every field.
    Csv,
    /// A JSON array, every field as the API sent it.
    Json,
}

/// `validate`'s options: the manifests, and where `--check-templates` reads the lists (the
/// connection defaults of `run` otherwise).
pub fn validate(args: ValidateArgs) -> Result<ValidateSettings, String> {
    let connection = connection(
        ConnectionArgs {
            base_url: args.base_url,
            simulate: args.simulate,
            concurrency: defaults::DEFAULT_CONCURRENCY,
            rate: vec![crate::units::RateArg::All(defaults::DEFAULT_RATE)],
            max_attempts: defaults::DEFAULT_MAX_ATTEMPTS,
            backoff: defaults::duration(defaults::DEFAULT_BACKOFF),
            backoff_max: defaults::duration(defaults::DEFAULT_BACKOFF_MAX),
        },
        "--timeout",
        defaults::duration(defaults::DEFAULT_TIMEOUT),
    )?;
    Ok(ValidateSettings {
        manifest: manifest(args.manifest),
        templates: args.templates.into(),
        connection,
    })
}

/// `templates`' options.
pub fn templates(args: TemplatesArgs) -> Result<TemplatesSettings, String> {
    Ok(TemplatesSettings {
        which: match args.list {
            TemplateListArg::Human => TemplateList::Human,
            TemplateListArg::Scene => TemplateList::Scene,
        },
        connection: connection(args.connection, "--timeout", args.timeout)?,
        format: match args.format {
            TemplateFormat::Table => ListFormat::Table,
            TemplateFormat::Csv => ListFormat::Csv,
            TemplateFormat::Json => ListFormat::Json,
        },
        gallery: args.gallery,
        page_size: args.page_size.clamp(1, crate::api::MAX_TEMPLATE_PAGE_SIZE),
    })
}
