//! Deployment artefacts for a Kedro project that moves data through vineyard:
//! catalog entries, a Dockerfile with its `.dockerignore`, and an Argo
//! `Workflow`. Everything is built as typed values (serde structs,
//! `serde_yaml::Value`, an enum of Dockerfile instructions) and serialised in
//! one place, never pasted into text templates. Nothing here knows Kedro's
//! Python API: the `kedro vineyard` commands gather the data and call these.

pub mod argo;
pub mod catalog;
pub mod docker;
mod error;
pub mod names;

pub use argo::{
    argo_file_name, check_workflow, render_workflow, ArgoNode, ArgoSpec, GroupBy, PodLocalDataset,
    PodLocalKind, RenderedWorkflow, Resources,
};
pub use catalog::{is_catch_all_pattern, render_catalog, CATCH_ALL, DATASET_TYPE};
pub use docker::{
    docker_build_command, lint_dockerfile, render_dockerfile, render_dockerignore,
    requirements_path, DockerSpec, VINEYARD_REQUIREMENT,
};
pub use names::{dns_label, dns_label_within, fnv1a64, is_dns_label, unique_dns_labels};

pub use error::DeployError;

/// The result type of the renderers.
pub type Result<T, E = DeployError> = std::result::Result<T, E>;
