//! The input of [`super::render_workflow`]: the project's nodes and the
//! options of `kedro vineyard argo generate`, and their checks.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::groups::{GroupBy, PodLocalDataset};
use super::invalid;
use super::resources::Resources;
use crate::deploy::Result;

/// The input of [`super::render_workflow`] (what `argo render --spec FILE.json` reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoSpec {
    /// The project's Python package: names the file and the workflow.
    pub package_name: String,
    /// The image every task runs (built with `kedro vineyard docker build`);
    /// the default of the workflow parameter `image`.
    pub image: String,
    /// Kedro environment passed to `kedro run -e` (where the vineyard catalog
    /// is); the default of the workflow parameter `env`.
    #[serde(default = "default_env")]
    pub env: String,
    /// Registered pipeline the nodes belong to; passed to `kedro run` unless `__default__`.
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
    /// `kedro run`'s option for one pipeline: `--pipelines` in Kedro 1.x
    /// (where `--pipeline`/`-p` is deprecated), `--pipeline` in 0.19.
    #[serde(default = "default_pipeline_option")]
    pub pipeline_option: String,
    /// `kedro run`'s option that selects a namespace: `--namespaces` in
    /// Kedro 1.x, `--namespace` in 0.19.
    #[serde(default = "default_namespace_option")]
    pub namespace_option: String,
    /// How nodes are put into tasks.
    #[serde(default)]
    pub group_by: GroupBy,
    /// `kedro run --tags`: the nodes were selected with them, the runs get them too.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `kedro run --params`: the default of the workflow parameter `params`.
    #[serde(default)]
    pub params: String,
    /// `kedro run --conf-source`: when set, the default of the workflow parameter `conf_source`.
    #[serde(default)]
    pub conf_source: Option<String>,
    /// Requests and limits of every `kedro` container, before the nodes' tags.
    #[serde(default)]
    pub resources: Resources,
    /// A Kubernetes Secret whose key `secret_key` becomes `VINEYARD_KEDRO_SECRET`.
    #[serde(default)]
    pub secret: Option<String>,
    /// The key of `secret` (default `secret`).
    #[serde(default = "default_secret_key")]
    pub secret_key: String,
    /// Datasets that live in one pod only (see [`PodLocalDataset`]).
    #[serde(default)]
    pub pod_local: Vec<PodLocalDataset>,
    /// Render even when a pod-local dataset crosses tasks (it is then a warning).
    #[serde(default)]
    pub allow_local: bool,
    /// Kubernetes namespace of the vineyardd deployment.
    #[serde(default = "default_vineyard_namespace")]
    pub vineyard_namespace: String,
    /// Name of the vineyardd deployment.
    #[serde(default = "default_vineyardd_name")]
    pub vineyardd_name: String,
    /// Use the vineyard operator: scheduler, socket, shared namespace, cleanup.
    #[serde(default = "yes")]
    pub with_operator: bool,
    /// The pipeline's nodes, in any order, with the names of their parents.
    pub nodes: Vec<ArgoNode>,
}

/// One Kedro node: its dependencies, and what grouping, resources and the
/// pod-local check need.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoNode {
    /// The node's full name (as `kedro run -n` takes it).
    pub name: String,
    /// Names of the parent nodes.
    #[serde(default)]
    pub deps: Vec<String>,
    /// The node's namespace (`a.b` for a node `a.b.f`), if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The node's tags (`argo.cpu-2` and the like set its resources).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Datasets the node reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Datasets the node writes.
    #[serde(default)]
    pub outputs: Vec<String>,
}

fn default_env() -> String {
    "vineyard".into()
}
fn default_pipeline() -> String {
    "__default__".into()
}
fn default_pipeline_option() -> String {
    "--pipeline".into()
}
fn default_namespace_option() -> String {
    "--namespaces".into()
}
fn default_secret_key() -> String {
    "secret".into()
}
fn default_vineyard_namespace() -> String {
    "vineyard-system".into()
}
fn default_vineyardd_name() -> String {
    "vineyardd-sample".into()
}
fn yes() -> bool {
    true
}

impl ArgoSpec {
    /// A spec with every default.
    pub fn new(
        package_name: impl Into<String>,
        image: impl Into<String>,
        nodes: Vec<ArgoNode>,
    ) -> ArgoSpec {
        ArgoSpec {
            package_name: package_name.into(),
            image: image.into(),
            env: default_env(),
            pipeline: default_pipeline(),
            pipeline_option: default_pipeline_option(),
            namespace_option: default_namespace_option(),
            group_by: GroupBy::None,
            tags: Vec::new(),
            params: String::new(),
            conf_source: None,
            resources: Resources::default(),
            secret: None,
            secret_key: default_secret_key(),
            pod_local: Vec::new(),
            allow_local: false,
            vineyard_namespace: default_vineyard_namespace(),
            vineyardd_name: default_vineyardd_name(),
            with_operator: true,
            nodes,
        }
    }
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn is_label_value(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.starts_with(ok)
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || "-_.".contains(c))
}

/// A DNS-1123 subdomain (a Secret's name): at most 253 of `[a-z0-9.-]`, alphanumeric at both ends.
fn is_dns_subdomain(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.starts_with(ok)
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || c == '-' || c == '.')
}

/// A key of a Secret's data: at most 253 of `[A-Za-z0-9._-]`.
fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn usable(what: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.contains(['\n', '\r']) {
        return Err(invalid(format!("{what} {v:?} is not usable")));
    }
    Ok(())
}

/// Checks the options and the nodes (names unique, dependencies known, no cycle).
pub(super) fn validate(spec: &ArgoSpec) -> Result<()> {
    if spec.package_name.trim().is_empty() {
        return Err(invalid("the package name is empty".into()));
    }
    if spec.image.is_empty() || spec.image.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "image {:?} is not an image reference (pass --image)",
            spec.image
        )));
    }
    usable("environment", &spec.env)?;
    usable("pipeline", &spec.pipeline)?;
    if spec.params.contains(['\n', '\r']) {
        return Err(invalid(format!("--params {:?} is not usable", spec.params)));
    }
    if let Some(conf) = &spec.conf_source {
        usable("--conf-source", conf)?;
    }
    for tag in &spec.tags {
        if tag.is_empty() || tag.contains([',', '\n', '\r']) {
            return Err(invalid(format!("tag {tag:?} is not usable")));
        }
    }
    for (what, v, allowed) in [
        (
            "pipeline option",
            &spec.pipeline_option,
            ["--pipeline", "--pipelines"],
        ),
        (
            "namespace option",
            &spec.namespace_option,
            ["--namespace", "--namespaces"],
        ),
    ] {
        if !allowed.contains(&v.as_str()) {
            return Err(invalid(format!("{what} {v:?} is not one of {allowed:?}")));
        }
    }
    spec.resources.validate("the default resources")?;
    if let Some(secret) = &spec.secret {
        if !is_dns_subdomain(secret) {
            return Err(invalid(format!(
                "--secret {secret:?} is not a Kubernetes Secret name (lowercase letters, digits, '-' and '.')"
            )));
        }
        if !is_secret_key(&spec.secret_key) {
            return Err(invalid(format!(
                "secret key {:?} is not a Kubernetes Secret key",
                spec.secret_key
            )));
        }
    }
    if spec.with_operator {
        for (what, v) in [
            ("vineyard namespace", &spec.vineyard_namespace),
            ("vineyardd name", &spec.vineyardd_name),
        ] {
            if !is_label_value(v) || v.contains('/') {
                return Err(invalid(format!("{what} {v:?} is not a Kubernetes name")));
            }
        }
    }
    validate_nodes(spec)
}

fn validate_nodes(spec: &ArgoSpec) -> Result<()> {
    if spec.nodes.is_empty() {
        let tags = if spec.tags.is_empty() {
            String::new()
        } else {
            format!(" with tags {:?}", spec.tags)
        };
        return Err(invalid(format!(
            "pipeline {:?} has no nodes{tags}",
            spec.pipeline
        )));
    }
    let mut index = HashMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        if index.insert(n.name.as_str(), i).is_some() {
            return Err(invalid(format!("node {:?} appears twice", n.name)));
        }
    }
    // Kahn's algorithm: every dependency known, no cycle.
    let mut indegree = vec![0usize; spec.nodes.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spec.nodes.len()];
    for (i, n) in spec.nodes.iter().enumerate() {
        let parents: HashSet<&str> = n.deps.iter().map(String::as_str).collect();
        for d in parents {
            let &p = index.get(d).ok_or_else(|| {
                invalid(format!(
                    "node {:?} depends on {d:?}, which is not a node of the pipeline",
                    n.name
                ))
            })?;
            children[p].push(i);
            indegree[i] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..spec.nodes.len())
        .filter(|&i| indegree[i] == 0)
        .collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    if done != spec.nodes.len() {
        let stuck: Vec<&str> = spec
            .nodes
            .iter()
            .zip(&indegree)
            .filter(|(_, d)| **d > 0)
            .map(|(n, _)| n.name.as_str())
            .collect();
        return Err(invalid(format!(
            "the node dependencies have a cycle through {stuck:?}"
        )));
    }
    Ok(())
}
