//! Deployment artefacts for a Kedro project that moves data through vineyard:
//! catalog entries, a Dockerfile with its `.dockerignore`, and an Argo
//! `Workflow`. Everything is built as typed values (serde structs,
//! `serde_yaml::Value`, an enum of Dockerfile instructions) and serialised in
//! one place, never pasted into text templates. Nothing here knows Kedro's
//! Python API: the `kedro vineyard` commands gather the data and call these.

pub mod argo;
pub mod catalog;
pub mod docker;
pub mod names;

pub use argo::{argo_file_name, render_workflow, ArgoNode, ArgoSpec};
pub use catalog::{is_catch_all_pattern, render_catalog, DATASET_TYPE};
pub use docker::{docker_build_command, lint_dockerfile, render_dockerfile, render_dockerignore, DockerSpec};
pub use names::{dns_label, dns_label_within, fnv1a64, is_dns_label, unique_dns_labels};

/// What can be wrong with the input of a renderer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// YAML that does not parse (an existing catalog) or serialise.
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Existing YAML whose top level is not a mapping.
    #[error("existing catalog must be a YAML mapping of dataset names, found {0}")]
    NotAMapping(&'static str),
    /// A render input that is inconsistent or incomplete.
    #[error("{0}")]
    Invalid(String),
}

/// The result type of the renderers.
pub type Result<T, E = DeployError> = std::result::Result<T, E>;
