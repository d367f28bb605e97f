//! An Argo `Workflow` running a Kedro pipeline (`kedro vineyard argo generate`).
//!
//! Typed serde structs mirror the parts of Argo's schema we use, so every
//! field name is spelled once and the YAML is produced by `serde_yaml`. The
//! nodes are put into tasks (one per node, or one per top-level namespace,
//! see [`groups`]); a `dag` template has one task per group, named by a
//! DNS-1123 label, depending on the groups its nodes read from. Each task
//! runs a `kedro` container template: `kedro run -n NODE` or `kedro run
//! --namespaces NS`, with the run options (`-e`, `--params`, `--conf-source`
//! from the workflow's parameters, `--tags`, the pipeline), one template per
//! distinct set of resources. With the vineyard operator the pods are placed
//! by `vineyard-scheduler` next to their parents' data, every task of the
//! workflow shares one vineyard namespace (the workflow's uid), and an exit
//! handler deletes that namespace's objects whatever the outcome.

use std::collections::BTreeMap;

use super::names::{dns_label, dns_label_within, unique_dns_labels};
use super::{DeployError, Result};

mod check;
mod groups;
mod resources;
mod schema;
mod spec;
pub use check::check_workflow;
pub use groups::{group_nodes, Group, GroupBy, GroupKind, PodLocalDataset, PodLocalKind};
pub use resources::{parse_quantity, Resources};
use schema::*;
pub use spec::{ArgoNode, ArgoSpec};

/// The socket path inside every pod.
pub const POD_SOCKET: &str = "/var/run/vineyard.sock";
/// Name of the node template (one per resource profile: `kedro-cpu-2`...).
pub const KEDRO_TEMPLATE: &str = "kedro";
/// Name of the namespace template (and prefix of its resource variants).
pub const KEDRO_NAMESPACE_TEMPLATE: &str = "kedro-namespace";
/// See [`KEDRO_TEMPLATE`].
pub const DAG_TEMPLATE: &str = "dag";
/// See [`KEDRO_TEMPLATE`].
pub const CLEANUP_TEMPLATE: &str = "cleanup";
/// The Argo variable every task's vineyard namespace is set to.
pub const WORKFLOW_NAMESPACE: &str = "{{workflow.uid}}";
/// The environment variable the HMAC secret of signed pickles is read from.
pub const SECRET_ENV: &str = "VINEYARD_KEDRO_SECRET";
const LABEL_PREFIX: &str = "scheduling.k8s.v6d.io";

/// The workflow's parameters (`argo submit -p NAME=VALUE` overrides them).
pub const PARAM_IMAGE: &str = "image";
/// See [`PARAM_IMAGE`].
pub const PARAM_ENV: &str = "env";
/// See [`PARAM_IMAGE`].
pub const PARAM_PARAMS: &str = "params";
/// See [`PARAM_IMAGE`].
pub const PARAM_CONF_SOURCE: &str = "conf_source";

/// A rendered workflow and what the user should know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedWorkflow {
    /// The `Workflow` YAML.
    pub yaml: String,
    /// Pod-local datasets that pass inside one task (or cross tasks, with `allow_local`).
    pub warnings: Vec<String>,
}

/// The file the workflow is written to: `argo-<package_name>.yml` (as before).
pub fn argo_file_name(package_name: &str) -> String {
    format!("argo-{package_name}.yml")
}

fn invalid(msg: String) -> DeployError {
    DeployError::Invalid(msg)
}

fn workflow_param(name: &str) -> String {
    format!("{{{{workflow.parameters.{name}}}}}")
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
        EnvVar::value("VINEYARD_IPC_SOCKET", POD_SOCKET),
        EnvVar::value("VINEYARD_KEDRO_NAMESPACE", WORKFLOW_NAMESPACE),
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
    Param {
        name,
        value,
        description: None,
    }
}

/// A `kedro` container template: what `kind` of group it runs, with `resources`.
fn kedro_template(spec: &ArgoSpec, name: String, kind: GroupKind, res: &Resources) -> Template {
    let op = spec.with_operator;
    let mut labels = base_labels(spec);
    let mut annotations = BTreeMap::new();
    let (select_option, select_param) = match kind {
        GroupKind::Node => ("-n", "kedro_node"),
        GroupKind::Namespace => (spec.namespace_option.as_str(), "kedro_namespace"),
    };
    let mut inputs = vec![param(select_param, None)];
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
        args.extend([spec.pipeline_option.clone(), spec.pipeline.clone()]);
    }
    args.extend([
        select_option.to_string(),
        format!("{{{{inputs.parameters.{select_param}}}}}"),
        "-e".into(),
        workflow_param(PARAM_ENV),
    ]);
    if !spec.tags.is_empty() {
        args.extend(["--tags".into(), spec.tags.join(",")]);
    }
    // One argument each, so that an empty value stays an (empty) option value.
    args.push(format!("--params={}", workflow_param(PARAM_PARAMS)));
    if spec.conf_source.is_some() {
        args.push(format!(
            "--conf-source={}",
            workflow_param(PARAM_CONF_SOURCE)
        ));
    }
    let (volumes, volume_mounts, mut env) = if op {
        vineyard_pod(spec)
    } else {
        Default::default()
    };
    if let Some(secret) = &spec.secret {
        env.push(EnvVar::secret(SECRET_ENV, secret, &spec.secret_key));
    }
    let resources = (!res.is_empty()).then(|| {
        let quantities: BTreeMap<&'static str, String> = res.entries().into_iter().collect();
        ResourceRequirements {
            requests: quantities.clone(),
            limits: quantities,
        }
    });
    Template {
        name,
        metadata: Some(PodMeta {
            labels,
            annotations,
        }),
        inputs: Some(Params { parameters: inputs }),
        retry_strategy: Some(RetryStrategy { limit: "1" }),
        container: Some(Container {
            image: workflow_param(PARAM_IMAGE),
            image_pull_policy: "IfNotPresent",
            command: vec!["kedro".into()],
            args,
            env,
            volume_mounts,
            resources,
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
        name: CLEANUP_TEMPLATE.into(),
        metadata: Some(PodMeta {
            labels,
            annotations,
        }),
        retry_strategy: Some(RetryStrategy { limit: "1" }),
        container: Some(Container {
            image: workflow_param(PARAM_IMAGE),
            image_pull_policy: "IfNotPresent",
            command: vec!["vineyard-kedro".into()],
            args,
            env,
            volume_mounts,
            resources: None,
        }),
        volumes,
        scheduler_name: Some("vineyard-scheduler"),
        ..Template::default()
    }
}

/// The `kedro` templates, one per (kind, resources) that a group needs, and
/// the template of each group. The profile of the default resources keeps
/// the plain name (`kedro`, `kedro-namespace`); others add their quantities
/// (`kedro-cpu-2-memory-4gi`).
fn kedro_templates(spec: &ArgoSpec, groups: &[Group]) -> Result<(Vec<Template>, Vec<usize>)> {
    let mut profiles: Vec<(GroupKind, Resources)> = Vec::new();
    let mut template_of = Vec::with_capacity(groups.len());
    for g in groups {
        let mut res = Resources::default();
        for &n in &g.nodes {
            let node = &spec.nodes[n];
            res = res.max(&resources::node_resources(
                &node.name,
                &node.tags,
                &spec.resources,
            )?);
        }
        let profile = (g.kind, res);
        let i = match profiles.iter().position(|p| *p == profile) {
            Some(i) => i,
            None => {
                profiles.push(profile);
                profiles.len() - 1
            }
        };
        template_of.push(i);
    }
    let names: Vec<String> = profiles
        .iter()
        .map(|(kind, res)| {
            let base = match kind {
                GroupKind::Node => KEDRO_TEMPLATE,
                GroupKind::Namespace => KEDRO_NAMESPACE_TEMPLATE,
            };
            if *res == spec.resources {
                return base.to_string();
            }
            let parts: Vec<String> = resources::RESOURCE_NAMES
                .iter()
                .zip([&res.cpu, &res.memory, &res.gpu])
                .filter_map(|((name, _), v)| v.as_ref().map(|v| format!("{name}-{v}")))
                .collect();
            dns_label(&format!("{base}-{}", parts.join("-")))
        })
        .collect();
    let templates = profiles
        .iter()
        .zip(unique_dns_labels(&names))
        .map(|((kind, res), name)| kedro_template(spec, name, *kind, res))
        .collect();
    Ok((templates, template_of))
}

fn dag_template(spec: &ArgoSpec, groups: &[Group], templates: &[String]) -> Template {
    let tasks = groups
        .iter()
        .zip(templates)
        .map(|(g, template)| {
            let deps: Vec<String> = g.deps.iter().map(|&d| groups[d].task.clone()).collect();
            let select = match g.kind {
                GroupKind::Node => "kedro_node",
                GroupKind::Namespace => "kedro_namespace",
            };
            let mut parameters = vec![param(select, Some(g.key.clone()))];
            if spec.with_operator {
                parameters.extend([
                    param("job", Some(g.task.clone())),
                    param("required", Some(deps.join(","))),
                ]);
            }
            Task {
                name: g.task.clone(),
                template: template.clone(),
                dependencies: deps,
                arguments: Params { parameters },
            }
        })
        .collect();
    Template {
        name: DAG_TEMPLATE.into(),
        dag: Some(Dag { tasks }),
        ..Template::default()
    }
}

fn workflow_arguments(spec: &ArgoSpec) -> Params {
    let described = |name, value: &str, description: &str| Param {
        name,
        value: Some(value.to_string()),
        description: Some(description.to_string()),
    };
    let mut parameters = vec![
        described(PARAM_IMAGE, &spec.image, "the image every task runs"),
        described(PARAM_ENV, &spec.env, "kedro run --env"),
        described(
            PARAM_PARAMS,
            &spec.params,
            "kedro run --params (key=value pairs, comma-separated)",
        ),
    ];
    if let Some(conf) = &spec.conf_source {
        parameters.push(described(
            PARAM_CONF_SOURCE,
            conf,
            "kedro run --conf-source (a path in the image, or a remote URL)",
        ));
    }
    Params { parameters }
}

/// Renders the Argo `Workflow` YAML for `spec`.
///
/// The nodes are grouped ([`group_nodes`]) into DAG tasks whose dependencies
/// are the groups' dependencies. With `with_operator` the `kedro` pods get
/// `schedulerName: vineyard-scheduler`, the `scheduling.k8s.v6d.io/*` labels
/// and annotation (job = task name, required = comma-joined parent task
/// names), the vineyardd socket directory mounted at `/var/run` with
/// `VINEYARD_IPC_SOCKET`, and `VINEYARD_KEDRO_NAMESPACE={{workflow.uid}}`;
/// `spec.onExit` runs `vineyard-kedro gc --namespace {{workflow.uid}}`.
/// Without it the result is a plain Kedro-Argo workflow, as the old plugin's
/// `-w false` made it: no socket mount or env, hence no shared namespace and
/// no exit handler. The image, `-e`, `--params` and `--conf-source` come from
/// the workflow's parameters, whose defaults are the spec's values.
///
/// A pod-local dataset written by one task and read by another is an error
/// naming both tasks, unless `allow_local`; one written and read inside a
/// task is a warning.
pub fn render_workflow(spec: &ArgoSpec) -> Result<RenderedWorkflow> {
    spec::validate(spec)?;
    let groups = group_nodes(spec)?;
    let report = groups::pod_local_report(spec, &groups);
    if !report.crossing.is_empty() && !spec.allow_local {
        return Err(invalid(format!(
            "{} cannot cross pods: {}. Store such a dataset in vineyard, with the operator (`kedro \
             vineyard catalog create` gives every dataset without a catalog entry a vineyard \
             entry), or at a remote URL (s3://, gs://, abfs://), put its writer and readers in one task (--group-by namespace), or \
             pass --allow-local if the pods share that storage",
            if report.crossing.len() == 1 {
                "a dataset"
            } else {
                "datasets"
            },
            report.crossing.join("; ")
        )));
    }
    let (kedro, template_of) = kedro_templates(spec, &groups)?;
    let template_names: Vec<String> = template_of.iter().map(|&t| kedro[t].name.clone()).collect();
    let mut templates = kedro;
    templates.push(dag_template(spec, &groups, &template_names));
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
            arguments: workflow_arguments(spec),
            templates,
        },
    };
    let mut warnings = report.within;
    if spec.allow_local {
        warnings.extend(
            report
                .crossing
                .into_iter()
                .map(|c| format!("{c} (allowed by --allow-local)")),
        );
    }
    Ok(RenderedWorkflow {
        yaml: serde_yaml::to_string(&workflow)?,
        warnings,
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_options;
