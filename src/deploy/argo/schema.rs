//! The parts of Argo's `Workflow` schema the renderer emits, as serde structs:
//! field names are spelled once, in camelCase through serde, and optional
//! parts are skipped when empty, so the YAML holds nothing Argo does not know.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Workflow {
    pub(super) api_version: &'static str,
    pub(super) kind: &'static str,
    pub(super) metadata: WorkflowMeta,
    pub(super) spec: WorkflowSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WorkflowMeta {
    pub(super) generate_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WorkflowSpec {
    pub(super) entrypoint: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) on_exit: Option<&'static str>,
    pub(super) arguments: Params,
    pub(super) templates: Vec<Template>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Template {
    pub(super) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<PodMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) inputs: Option<Params>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retry_strategy: Option<RetryStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) container: Option<Container>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) volumes: Vec<Volume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) scheduler_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dag: Option<Dag>,
}

#[derive(Serialize)]
pub(super) struct PodMeta {
    pub(super) labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: BTreeMap<String, String>,
}

/// Both `inputs` and `arguments`: a list of parameters.
#[derive(Serialize)]
pub(super) struct Params {
    pub(super) parameters: Vec<Param>,
}

#[derive(Serialize)]
pub(super) struct Param {
    pub(super) name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<String>,
}

/// `limit` is an IntOrString; the string form validates against the schema file as well.
#[derive(Serialize)]
pub(super) struct RetryStrategy {
    pub(super) limit: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Container {
    pub(super) image: String,
    pub(super) image_pull_policy: &'static str,
    pub(super) command: Vec<String>,
    pub(super) args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) resources: Option<ResourceRequirements>,
}

/// Requests and limits, keyed by resource name (`cpu`, `memory`, `nvidia.com/gpu`).
#[derive(Serialize)]
pub(super) struct ResourceRequirements {
    pub(super) requests: BTreeMap<&'static str, String>,
    pub(super) limits: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnvVar {
    pub(super) name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value_from: Option<EnvVarSource>,
}

impl EnvVar {
    pub(super) fn value(name: &'static str, value: &str) -> EnvVar {
        EnvVar {
            name,
            value: Some(value.to_string()),
            value_from: None,
        }
    }

    pub(super) fn secret(name: &'static str, secret: &str, key: &str) -> EnvVar {
        EnvVar {
            name,
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: SecretKeySelector {
                    name: secret.to_string(),
                    key: key.to_string(),
                },
            }),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnvVarSource {
    pub(super) secret_key_ref: SecretKeySelector,
}

#[derive(Serialize)]
pub(super) struct SecretKeySelector {
    pub(super) name: String,
    pub(super) key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VolumeMount {
    pub(super) name: &'static str,
    pub(super) mount_path: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Volume {
    pub(super) name: &'static str,
    pub(super) host_path: HostPath,
}

#[derive(Serialize)]
pub(super) struct HostPath {
    pub(super) path: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
}

#[derive(Serialize)]
pub(super) struct Dag {
    pub(super) tasks: Vec<Task>,
}

#[derive(Serialize)]
pub(super) struct Task {
    pub(super) name: String,
    pub(super) template: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) dependencies: Vec<String>,
    pub(super) arguments: Params,
}
