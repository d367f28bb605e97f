//! Unit tests of the Argo workflow renderer and its structural check.

use std::collections::HashSet;

use serde_yaml::Value;

use super::*;
use crate::deploy::names::is_dns_label;

pub(super) fn node(name: &str, deps: &[&str]) -> ArgoNode {
    ArgoNode {
        name: name.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        ..ArgoNode::default()
    }
}

pub(super) fn iris() -> ArgoSpec {
    ArgoSpec::new(
        "iris_project",
        "iris:1.0",
        vec![
            node("split", &[]),
            node("make_predictions", &["split"]),
            node("report_accuracy", &["make_predictions", "split"]),
        ],
    )
}

pub(super) fn render(spec: &ArgoSpec) -> Value {
    let text = render_workflow(spec).unwrap().yaml;
    assert_eq!(check_workflow(&text), Vec::<String>::new(), "{text}");
    serde_yaml::from_str(&text).unwrap()
}

pub(super) fn template<'a>(wf: &'a Value, name: &str) -> &'a Value {
    wf["spec"]["templates"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

pub(super) fn tasks(wf: &Value) -> Vec<Value> {
    template(wf, "dag")["dag"]["tasks"]
        .as_sequence()
        .unwrap()
        .clone()
}

pub(super) fn param<'a>(task: &'a Value, name: &str) -> &'a Value {
    &task["arguments"]["parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()["value"]
}

#[test]
fn workflow_has_the_expected_shape() {
    let wf = render(&iris());
    assert_eq!(wf["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(wf["kind"], "Workflow");
    assert_eq!(wf["metadata"]["generateName"], "iris-project-");
    assert_eq!(wf["spec"]["entrypoint"], "dag");
    assert_eq!(wf["spec"]["onExit"], "cleanup");
    let kedro = template(&wf, "kedro");
    let c = &kedro["container"];
    assert_eq!(c["image"], "{{workflow.parameters.image}}");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["command"], Value::from(vec!["kedro"]));
    assert_eq!(
        c["args"],
        Value::from(vec![
            "run",
            "-n",
            "{{inputs.parameters.kedro_node}}",
            "-e",
            "{{workflow.parameters.env}}",
            "--params={{workflow.parameters.params}}"
        ])
    );
    assert!(c.get("resources").is_none());
    let args = wf["spec"]["arguments"]["parameters"].as_sequence().unwrap();
    let values: Vec<(&str, &str)> = args
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        values,
        [("image", "iris:1.0"), ("env", "vineyard"), ("params", "")]
    );
    assert_eq!(c["env"][0]["name"], "VINEYARD_IPC_SOCKET");
    assert_eq!(c["env"][0]["value"], POD_SOCKET);
    assert_eq!(c["env"][1]["name"], "VINEYARD_KEDRO_NAMESPACE");
    assert_eq!(c["env"][1]["value"], "{{workflow.uid}}");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/var/run");
    assert_eq!(
        kedro["volumes"][0]["hostPath"]["path"],
        "/var/run/vineyard-kubernetes/vineyard-system/vineyardd-sample"
    );
    assert_eq!(kedro["schedulerName"], "vineyard-scheduler");
    assert_eq!(kedro["retryStrategy"]["limit"], "1");
    let labels = &kedro["metadata"]["labels"];
    assert_eq!(labels["app"], "kedro-argo");
    assert_eq!(
        labels["scheduling.k8s.v6d.io/vineyardd-namespace"],
        "vineyard-system"
    );
    assert_eq!(
        labels["scheduling.k8s.v6d.io/vineyardd"],
        "vineyardd-sample"
    );
    assert_eq!(
        labels["scheduling.k8s.v6d.io/job"],
        "{{inputs.parameters.job}}"
    );
    assert_eq!(
        kedro["metadata"]["annotations"]["scheduling.k8s.v6d.io/required"],
        "{{inputs.parameters.required}}"
    );
}

#[test]
fn dag_mirrors_the_node_dependencies() {
    let wf = render(&iris());
    let t = tasks(&wf);
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["name"], "split");
    assert!(t[0].get("dependencies").is_none());
    assert_eq!(param(&t[0], "required"), "");
    assert_eq!(t[1]["name"], "make-predictions");
    assert_eq!(t[1]["dependencies"], Value::from(vec!["split"]));
    assert_eq!(
        t[2]["dependencies"],
        Value::from(vec!["make-predictions", "split"])
    );
    assert_eq!(param(&t[2], "kedro_node"), "report_accuracy");
    assert_eq!(param(&t[2], "job"), "report-accuracy");
    assert_eq!(param(&t[2], "required"), "make-predictions,split");
}

#[test]
fn exit_handler_deletes_the_workflow_namespace() {
    let wf = render(&iris());
    let cleanup = template(&wf, "cleanup");
    let c = &cleanup["container"];
    assert_eq!(c["image"], "{{workflow.parameters.image}}");
    assert_eq!(c["command"], Value::from(vec!["vineyard-kedro"]));
    assert_eq!(
        c["args"],
        Value::from(vec!["gc", "--namespace", "{{workflow.uid}}"])
    );
    assert_eq!(c["env"], template(&wf, "kedro")["container"]["env"]);
    assert_eq!(cleanup["volumes"], template(&wf, "kedro")["volumes"]);
    assert_eq!(cleanup["schedulerName"], "vineyard-scheduler");
    assert_eq!(
        cleanup["metadata"]["labels"]["scheduling.k8s.v6d.io/job"],
        "cleanup"
    );
    assert_eq!(
        cleanup["metadata"]["annotations"]["scheduling.k8s.v6d.io/required"],
        ""
    );
}

#[test]
fn without_operator_no_vineyard_remains() {
    let spec = ArgoSpec {
        with_operator: false,
        env: "prod".into(),
        pipeline: "ds".into(),
        ..iris()
    };
    let text = render_workflow(&spec).unwrap().yaml;
    assert!(
        !text.contains("vineyard") && !text.contains("v6d") && !text.contains("workflow.uid"),
        "{text}"
    );
    let wf = render(&spec);
    assert!(wf["spec"].get("onExit").is_none());
    let kedro = template(&wf, "kedro");
    assert_eq!(
        kedro["container"]["args"],
        Value::from(vec![
            "run",
            "--pipeline",
            "ds",
            "-n",
            "{{inputs.parameters.kedro_node}}",
            "-e",
            "{{workflow.parameters.env}}",
            "--params={{workflow.parameters.params}}"
        ])
    );
    assert_eq!(kedro["metadata"]["labels"]["app"], "kedro-argo");
    assert_eq!(
        kedro["inputs"]["parameters"].as_sequence().unwrap().len(),
        1
    );
    assert_eq!(
        tasks(&wf)[1]["arguments"]["parameters"]
            .as_sequence()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn odd_node_names_become_distinct_valid_task_names() {
    let long = format!("data_science.{}", "very_long_node_name_".repeat(6));
    let names = [
        "ns.Preprocess_Node",
        "ns_preprocess.node",
        "数据",
        "模型",
        "f([a,b]) -> [c]",
        long.as_str(),
    ];
    let nodes = names
        .iter()
        .enumerate()
        .map(|(i, n)| node(n, if i == 0 { &[] } else { &names[..1] }))
        .collect();
    let spec = ArgoSpec::new("p", "img:1", nodes);
    let wf = render(&spec);
    let t = tasks(&wf);
    let labels: Vec<&str> = t.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert!(labels.iter().all(|l| is_dns_label(l)), "{labels:?}");
    let unique: HashSet<_> = labels.iter().collect();
    assert_eq!(unique.len(), labels.len());
    for (task, name) in t.iter().zip(names) {
        assert_eq!(param(task, "kedro_node"), name);
        assert_eq!(param(task, "job"), &task["name"]);
    }
    assert_eq!(t[5]["dependencies"][0], t[0]["name"]);
}

#[test]
fn bad_specs_are_refused() {
    let bad = |f: &dyn Fn(&mut ArgoSpec), what: &str| {
        let mut spec = iris();
        f(&mut spec);
        let err = render_workflow(&spec).unwrap_err().to_string();
        assert!(err.contains(what), "{err:?} lacks {what:?}");
    };
    bad(&|s| s.image.clear(), "--image");
    bad(&|s| s.nodes.clear(), "no nodes");
    bad(&|s| s.nodes.push(node("split", &[])), "twice");
    bad(&|s| s.nodes[0].deps.push("nope".into()), "not a node");
    bad(&|s| s.nodes[0].deps.push("report_accuracy".into()), "cycle");
    bad(&|s| s.vineyard_namespace = "a/b".into(), "Kubernetes name");
    bad(
        &|s| s.pipeline_option = "-p".into(),
        "pipeline option \"-p\"",
    );
    bad(&|s| s.namespace_option = "-ns".into(), "namespace option");
    bad(
        &|s| s.secret = Some("My_Secret".into()),
        "not a Kubernetes Secret name",
    );
    bad(
        &|s| {
            s.secret = Some("ok".into());
            s.secret_key = "a/b".into();
        },
        "not a Kubernetes Secret key",
    );
    bad(&|s| s.tags = vec!["a,b".into()], "tag \"a,b\"");
    bad(&|s| s.conf_source = Some(String::new()), "--conf-source");
    bad(&|s| s.params = "a=1\nb=2".into(), "--params");
    bad(
        &|s| s.resources.memory = Some("4GB".into()),
        "memory \"4GB\"",
    );
    bad(
        &|s| s.nodes[1].tags = vec!["argo.gpu-half".into()],
        "node \"make_predictions\": tag \"argo.gpu-half\"",
    );
}

#[test]
fn spec_json_uses_defaults_and_rejects_unknown_fields() {
    let spec: ArgoSpec =
        serde_json::from_str(r#"{"package_name": "p", "image": "i:1", "nodes": [{"name": "a"}]}"#)
            .unwrap();
    assert_eq!(spec.env, "vineyard");
    assert_eq!(spec.pipeline, "__default__");
    assert_eq!(spec.vineyard_namespace, "vineyard-system");
    assert_eq!(spec.vineyardd_name, "vineyardd-sample");
    assert!(spec.with_operator);
    assert_eq!(spec.group_by, GroupBy::None);
    assert_eq!(spec.pipeline_option, "--pipeline");
    assert_eq!(spec.namespace_option, "--namespaces");
    assert_eq!(spec.secret_key, "secret");
    assert!(spec.resources.is_empty() && spec.pod_local.is_empty() && !spec.allow_local);
    assert!(serde_json::from_str::<ArgoSpec>(
        r#"{"package_name": "p", "image": "i", "nodes": [], "imag": 1}"#
    )
    .is_err());
    assert_eq!(argo_file_name("iris_project"), "argo-iris_project.yml");
}

#[test]
fn check_reports_what_argo_lint_would() {
    let has = |yaml: &str, what: &str| {
        let p = check_workflow(yaml);
        assert!(p.iter().any(|m| m.contains(what)), "{what:?} not in {p:?}");
    };
    let head =
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: x-}\nspec:\n";
    let kedro = "  - name: k\n    inputs: {parameters: [{name: n}]}\n    container: {image: i, args: ['{{inputs.parameters.n}}']}\n";
    has(
        &format!("{head}  entrypoint: nope\n  templates:\n{kedro}"),
        "entrypoint nope",
    );
    has(
        &format!("{head}  entrypoint: k\n  onExit: gone\n  templates:\n{kedro}"),
        "onExit gone",
    );
    let dag = |tasks: &str| {
        format!("{head}  entrypoint: d\n  templates:\n{kedro}  - name: d\n    dag:\n      tasks:\n{tasks}")
    };
    has(
        &dag("      - {name: A_b, template: k, arguments: {parameters: [{name: n, value: x}]}}\n"),
        "DNS-1123",
    );
    has(
        &dag("      - {name: a, template: k}\n"),
        "does not supply parameter n",
    );
    has(
        &dag("      - {name: a, template: q}\n"),
        "unknown template q",
    );
    has(&dag("      - {name: a, template: k, dependencies: [b], arguments: {parameters: [{name: n, value: x}]}}\n"), "unknown task b");
    let cyc = "      - {name: a, template: k, dependencies: [b], arguments: {parameters: [{name: n, value: x}]}}\n      - {name: b, template: k, dependencies: [a], arguments: {parameters: [{name: n, value: x}]}}\n";
    has(&dag(cyc), "cycle");
    has(&format!("{head}  entrypoint: k\n  templates:\n  - name: k\n    container: {{image: i, args: ['{{{{inputs.parameters.m}}}}']}}\n"), "undeclared input parameter m");
    has(&format!("{head}  entrypoint: k\n  arguments: {{parameters: [{{name: env, value: x}}]}}\n  templates:\n  - name: k\n    container: {{image: '{{{{workflow.parameters.image}}}}', args: ['{{{{workflow.parameters.env}}}}']}}\n"), "undeclared workflow parameter image");
}
