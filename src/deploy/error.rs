//! The error type of the deploy renderers: what the `kedro vineyard catalog`,
//! `docker` and `argo` commands gave them cannot be rendered. It has nothing
//! to do with vineyardd, so it is not a variant of [`crate::Error`]; the
//! binding raises it as `ValueError`, which the click commands report.

/// Why a catalog, Dockerfile or workflow cannot be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// YAML that does not parse (an existing catalog) or serialise.
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// An existing catalog whose top level is not a mapping.
    #[error("existing catalog must be a YAML mapping of dataset names, found {0}")]
    NotAMapping(&'static str),
    /// A render input that is inconsistent or incomplete.
    #[error("{0}")]
    Invalid(String),
}
