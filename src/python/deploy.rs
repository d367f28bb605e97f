//! Deployment renderers for the `kedro vineyard` click commands: the Python
//! side gathers the project's data, the Rust side renders (serde_yaml).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::deploy::{self, ArgoSpec, DockerSpec};

fn spec<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> PyResult<T> {
    serde_json::from_str(json)
        .map_err(|e| PyValueError::new_err(format!("invalid {what} spec: {e}")))
}

/// Merges VineyardDataset entries for `names` into `existing` catalog YAML
/// (never clobbering a user's entry); returns `(yaml, names_added)`.
#[pyfunction]
#[pyo3(signature = (names, existing = None, catch_all = false))]
pub fn render_catalog(
    names: Vec<String>,
    existing: Option<String>,
    catch_all: bool,
) -> PyResult<(String, Vec<String>)> {
    Ok(deploy::render_catalog(
        &names,
        existing.as_deref(),
        catch_all,
    )?)
}

/// Renders the Argo Workflow from a JSON `ArgoSpec`: `(yaml, warnings)`.
#[pyfunction]
pub fn render_argo(spec_json: &str) -> PyResult<(String, Vec<String>)> {
    let rendered = deploy::render_workflow(&spec::<ArgoSpec>(spec_json, "argo")?)?;
    Ok((rendered.yaml, rendered.warnings))
}

/// `argo-<package>.yml`.
#[pyfunction]
pub fn argo_file_name(package_name: &str) -> String {
    deploy::argo_file_name(package_name)
}

/// What `argo lint` would complain about in a workflow (empty when fine).
#[pyfunction]
pub fn check_workflow(yaml: &str) -> Vec<String> {
    deploy::check_workflow(yaml)
}

/// Renders the Dockerfile from a JSON `DockerSpec`.
#[pyfunction]
pub fn render_dockerfile(spec_json: &str) -> PyResult<String> {
    Ok(deploy::render_dockerfile(&spec::<DockerSpec>(
        spec_json, "docker",
    )?)?)
}

/// The `.dockerignore` that goes with it.
#[pyfunction]
pub fn render_dockerignore() -> String {
    deploy::render_dockerignore()
}

/// Structural problems of a Dockerfile (empty when fine).
#[pyfunction]
pub fn lint_dockerfile(text: &str) -> Vec<String> {
    deploy::lint_dockerfile(text)
}

/// The requirements file of a project made by this Kedro version.
#[pyfunction]
pub fn requirements_path(kedro_version: &str) -> &'static str {
    deploy::requirements_path(kedro_version)
}

/// The argv of `docker build` for these options.
#[pyfunction]
pub fn docker_build_command(
    image: &str,
    uid: u32,
    gid: u32,
    base_image: &str,
    docker_args: Vec<String>,
    context: &str,
) -> Vec<String> {
    deploy::docker_build_command(image, uid, gid, base_image, &docker_args, context)
}

/// Runs the `vineyard-kedro` command line (program name first) and returns
/// `(exit_code, stdout, stderr)`, so click can print through its own streams.
#[pyfunction]
pub fn run_cli_captured(py: Python<'_>, argv: Vec<String>) -> (i32, String, String) {
    py.detach(|| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = crate::cli::run_with(argv, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    })
}
