//! An Argo `Workflow` running one Kedro node per pod (`kedro vineyard argo generate`).
//!
//! Typed serde structs mirror the parts of Argo's schema we use, so every
//! field name is spelled once and the YAML is produced by `serde_yaml`. A
//! `kedro` container template runs `kedro run -n NODE -e ENV`; a `dag`
//! template has one task per node, named by a DNS-1123 label of the node
//! name, depending on its parents. With the vineyard operator the pods are
//! placed by `vineyard-scheduler` next to their parents' data, every task of
//! the workflow shares one vineyard namespace (the workflow's uid), and an
//! exit handler deletes that namespace's objects whatever the outcome.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::names::{dns_label_within, unique_dns_labels};
use super::{DeployError, Result};

mod check;
mod schema;
pub use check::check_workflow;
use schema::*;

/// The socket path inside every pod.
pub const POD_SOCKET: &str = "/var/run/vineyard.sock";
/// Names of the three templates.
pub const KEDRO_TEMPLATE: &str = "kedro";
/// See [`KEDRO_TEMPLATE`].
pub const DAG_TEMPLATE: &str = "dag";
/// See [`KEDRO_TEMPLATE`].
pub const CLEANUP_TEMPLATE: &str = "cleanup";
/// The Argo variable every task's vineyard namespace is set to.
pub const WORKFLOW_NAMESPACE: &str = "{{workflow.uid}}";
const LABEL_PREFIX: &str = "scheduling.k8s.v6d.io";

/// The input of [`render_workflow`] (what `argo render --spec FILE.json` reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoSpec {
    /// The project's Python package: names the file and the workflow.
    pub package_name: String,
    /// The image every task runs (built with `kedro vineyard docker build`).
    pub image: String,
    /// Kedro environment passed to `kedro run -e` (where the vineyard catalog is).
    #[serde(default = "default_env")]
    pub env: String,
    /// Registered pipeline the nodes belong to; passed as `-p` unless `__default__`.
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
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

/// One Kedro node and the nodes it depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoNode {
    /// The node's full name (as `kedro run -n` takes it).
    pub name: String,
    /// Names of the parent nodes.
    #[serde(default)]
    pub deps: Vec<String>,
}

fn default_env() -> String {
    "vineyard".into()
}
fn default_pipeline() -> String {
    "__default__".into()
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
            vineyard_namespace: default_vineyard_namespace(),
            vineyardd_name: default_vineyardd_name(),
            with_operator: true,
            nodes,
        }
    }
}

/// The file the workflow is written to: `argo-<package_name>.yml` (as before).
pub fn argo_file_name(package_name: &str) -> String {
    format!("argo-{package_name}.yml")
}

// ---- building --------------------------------------------------------------

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn is_label_value(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.starts_with(ok)
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || "-_.".contains(c))
}

fn invalid(msg: String) -> DeployError {
    DeployError::Invalid(msg)
}

/// Checks the spec and returns the task names, in node order.
fn validate(spec: &ArgoSpec) -> Result<Vec<String>> {
    if spec.package_name.trim().is_empty() {
        return Err(invalid("the package name is empty".into()));
    }
    if spec.image.is_empty() || spec.image.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "image {:?} is not an image reference (pass --image)",
            spec.image
        )));
    }
    for (what, v) in [("environment", &spec.env), ("pipeline", &spec.pipeline)] {
        if v.is_empty() || v.contains(['\n', '\r']) {
            return Err(invalid(format!("{what} {v:?} is not usable")));
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
    if spec.nodes.is_empty() {
        return Err(invalid(format!(
            "pipeline {:?} has no nodes",
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
    Ok(unique_dns_labels(
        &spec
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
    ))
}

/// Socket volume, its mount and the env every vineyard pod gets.
fn vineyard_pod(spec: &ArgoSpec) -> (Vec<Volume>, Vec<VolumeMount>, Vec<EnvVar>) {
    let path = format!(
        "/var/run/vineyard-kubernetes/{}/{}",
        spec.vineyard_namespace, spec.vineyardd_name
    );
    let volumes = vec![Volume {
        name: "vineyard-socket",
        host_path: HostPath {
            path,
            kind: "DirectoryOrCreate",
        },
    }];
    let mounts = vec![VolumeMount {
        name: "vineyard-socket",
        mount_path: "/var/run",
    }];
    let env = vec![
        EnvVar {
            name: "VINEYARD_IPC_SOCKET",
            value: POD_SOCKET.into(),
        },
        EnvVar {
            name: "VINEYARD_KEDRO_NAMESPACE",
            value: WORKFLOW_NAMESPACE.into(),
        },
    ];
    (volumes, mounts, env)
}

fn base_labels(spec: &ArgoSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("app".to_string(), "kedro-argo".to_string())]);
    if spec.with_operator {
        labels.insert(
            format!("{LABEL_PREFIX}/vineyardd-namespace"),
            spec.vineyard_namespace.clone(),
        );
        labels.insert(
            format!("{LABEL_PREFIX}/vineyardd"),
            spec.vineyardd_name.clone(),
        );
    }
    labels
}

fn param(name: &'static str, value: Option<String>) -> Param {
    Param { name, value }
}

fn kedro_template(spec: &ArgoSpec) -> Template {
    let op = spec.with_operator;
    let mut labels = base_labels(spec);
    let mut annotations = BTreeMap::new();
    let mut inputs = vec![param("kedro_node", None)];
    if op {
        labels.insert(
            format!("{LABEL_PREFIX}/job"),
            "{{inputs.parameters.job}}".into(),
        );
        annotations.insert(
            format!("{LABEL_PREFIX}/required"),
            "{{inputs.parameters.required}}".into(),
        );
        inputs.extend([param("job", None), param("required", None)]);
    }
    let mut args = vec!["run".to_string()];
    if spec.pipeline != "__default__" {
        args.extend(["-p".to_string(), spec.pipeline.clone()]);
    }
    args.extend(["-n", "{{inputs.parameters.kedro_node}}", "-e"].map(String::from));
    args.push(spec.env.clone());
    let (volumes, volume_mounts, env) = if op {
        vineyard_pod(spec)
    } else {
        Default::default()
    };
    Template {
        name: KEDRO_TEMPLATE,
        metadata: Some(PodMeta {
            labels,
            annotations,
        }),
        inputs: Some(Params { parameters: inputs }),
        retry_strategy: Some(RetryStrategy { limit: "1" }),
        container: Some(Container {
            image: spec.image.clone(),
            image_pull_policy: "IfNotPresent",
            command: vec!["kedro".into()],
            args,
            env,
            volume_mounts,
        }),
        volumes,
        scheduler_name: op.then_some("vineyard-scheduler"),
        dag: None,
    }
}

fn cleanup_template(spec: &ArgoSpec) -> Template {
    let (volumes, volume_mounts, env) = vineyard_pod(spec);
    let args = ["gc", "--namespace", WORKFLOW_NAMESPACE]
        .map(String::from)
        .to_vec();
    // Scheduled like a root task (a job that requires nothing), so it lands on a vineyard node.
    let mut labels = base_labels(spec);
    labels.insert(format!("{LABEL_PREFIX}/job"), CLEANUP_TEMPLATE.into());
    let annotations = BTreeMap::from([(format!("{LABEL_PREFIX}/required"), String::new())]);
    Template {
        name: CLEANUP_TEMPLATE,
        metadata: Some(PodMeta {
            labels,
            annotations,
        }),
        retry_strategy: Some(RetryStrategy { limit: "1" }),
        container: Some(Container {
            image: spec.image.clone(),
            image_pull_policy: "IfNotPresent",
            command: vec!["vineyard-kedro".into()],
            args,
            env,
            volume_mounts,
        }),
        volumes,
        scheduler_name: Some("vineyard-scheduler"),
        ..Template::default()
    }
}

fn dag_template(spec: &ArgoSpec, names: &[String]) -> Template {
    let task_of: HashMap<&str, &str> = spec
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .zip(names.iter().map(String::as_str))
        .collect();
    let tasks = spec
        .nodes
        .iter()
        .zip(names)
        .map(|(node, name)| {
            let mut deps: Vec<String> = Vec::new();
            for d in &node.deps {
                let t = task_of[d.as_str()].to_string();
                if !deps.contains(&t) {
                    deps.push(t);
                }
            }
            let mut parameters = vec![param("kedro_node", Some(node.name.clone()))];
            if spec.with_operator {
                parameters.extend([
                    param("job", Some(name.clone())),
                    param("required", Some(deps.join(","))),
                ]);
            }
            Task {
                name: name.clone(),
                template: KEDRO_TEMPLATE,
                dependencies: deps,
                arguments: Params { parameters },
            }
        })
        .collect();
    Template {
        name: DAG_TEMPLATE,
        dag: Some(Dag { tasks }),
        ..Template::default()
    }
}

/// Renders the Argo `Workflow` YAML for `spec`.
///
/// With `with_operator` the `kedro` pods get `schedulerName:
/// vineyard-scheduler`, the `scheduling.k8s.v6d.io/*` labels and annotation
/// (job = task name, required = comma-joined parent task names), the
/// vineyardd socket directory mounted at `/var/run` with
/// `VINEYARD_IPC_SOCKET`, and `VINEYARD_KEDRO_NAMESPACE={{workflow.uid}}`;
/// `spec.onExit` runs `vineyard-kedro gc --namespace {{workflow.uid}}`.
/// Without it the result is a plain Kedro-Argo workflow, as the old plugin's
/// `-w false` made it: no socket mount or env (the pods cannot reach a
/// vineyardd through us), hence no shared namespace and no exit handler,
/// and only the `kedro_node` parameter. `kedro run` gets `-e ENV` either way.
pub fn render_workflow(spec: &ArgoSpec) -> Result<String> {
    let names = validate(spec)?;
    let mut templates = vec![kedro_template(spec), dag_template(spec, &names)];
    if spec.with_operator {
        templates.push(cleanup_template(spec));
    }
    let workflow = Workflow {
        api_version: "argoproj.io/v1alpha1",
        kind: "Workflow",
        metadata: WorkflowMeta {
            generate_name: format!("{}-", dns_label_within(&spec.package_name, 50)),
        },
        spec: WorkflowSpec {
            entrypoint: DAG_TEMPLATE,
            on_exit: spec.with_operator.then_some(CLEANUP_TEMPLATE),
            templates,
        },
    };
    Ok(serde_yaml::to_string(&workflow)?)
}

#[cfg(test)]
mod tests;
