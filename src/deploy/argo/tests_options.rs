//! Unit tests of grouping, resources, run options, the secret and the
//! pod-local dataset check.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::tests::{node, param, render, tasks, template};
use super::*;

fn ns_node(name: &str, namespace: Option<&str>, deps: &[&str]) -> ArgoNode {
    ArgoNode {
        namespace: namespace.map(Into::into),
        ..node(name, deps)
    }
}

/// Raw data -> ingest.a.clean -> ingest.b.merge -> model.fit -> report,
/// with a second un-namespaced root feeding model.
fn namespaced() -> ArgoSpec {
    let nodes = vec![
        ns_node("load", None, &[]),
        ns_node("extra", None, &[]),
        ns_node("ingest.a.clean", Some("ingest.a"), &["load"]),
        ns_node("ingest.b.merge", Some("ingest.b"), &["ingest.a.clean"]),
        ns_node("model.fit", Some("model"), &["ingest.b.merge", "extra"]),
        ns_node("model.score", Some("model"), &["model.fit"]),
        ns_node("report", None, &["model.score", "ingest.b.merge"]),
    ];
    ArgoSpec {
        group_by: GroupBy::Namespace,
        ..ArgoSpec::new("proj", "img:1", nodes)
    }
}

fn dag(wf: &Value) -> BTreeMap<String, BTreeSet<String>> {
    tasks(wf)
        .iter()
        .map(|t| {
            let deps = t
                .get("dependencies")
                .and_then(Value::as_sequence)
                .map(|d| d.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (t["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn namespaces_become_one_task_each_and_the_dag_follows_the_groups() {
    let wf = render(&namespaced());
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("load", set(&[])),
        ("extra", set(&[])),
        ("ingest", set(&["load"])),
        ("model", set(&["ingest", "extra"])),
        ("report", set(&["model", "ingest"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(dag(&wf), expected);
    let t = tasks(&wf);
    assert_eq!(t[2]["template"], "kedro-namespace");
    assert_eq!(param(&t[2], "kedro_namespace"), "ingest");
    assert_eq!(param(&t[2], "required"), "load");
    assert_eq!(t[0]["template"], "kedro");
    assert_eq!(param(&t[0], "kedro_node"), "load");
    let ns = template(&wf, "kedro-namespace");
    assert_eq!(ns["container"]["args"][1], "--namespaces");
    assert_eq!(
        ns["container"]["args"][2],
        "{{inputs.parameters.kedro_namespace}}"
    );
    // Kedro 0.19 spells the option in the singular.
    let wf = render(&ArgoSpec {
        namespace_option: "--namespace".into(),
        ..namespaced()
    });
    assert_eq!(
        template(&wf, "kedro-namespace")["container"]["args"][1],
        "--namespace"
    );
    // Grouping by none keeps one task per node.
    let none = render(&ArgoSpec {
        group_by: GroupBy::None,
        ..namespaced()
    });
    assert_eq!(tasks(&none).len(), 7);
}

#[test]
fn a_namespace_and_a_node_of_the_same_name_stay_apart() {
    let spec = ArgoSpec {
        group_by: GroupBy::Namespace,
        ..ArgoSpec::new(
            "p",
            "i:1",
            vec![
                ns_node("ns", None, &[]),
                ns_node("ns.f", Some("ns"), &["ns"]),
            ],
        )
    };
    let t = tasks(&render(&spec));
    assert_eq!(t.len(), 2);
    assert_ne!(t[0]["name"], t[1]["name"]);
    assert_eq!(t[1]["dependencies"][0], t[0]["name"]);
}

#[test]
fn an_interrupted_namespace_is_refused() {
    // a.x -> b -> a.y: grouping `a` would need `b` before and after it.
    let spec = ArgoSpec {
        group_by: GroupBy::Namespace,
        ..ArgoSpec::new(
            "p",
            "i:1",
            vec![
                ns_node("a.x", Some("a"), &[]),
                ns_node("b", None, &["a.x"]),
                ns_node("a.y", Some("a"), &["b"]),
            ],
        )
    };
    let err = render_workflow(&spec).unwrap_err().to_string();
    assert!(
        err.contains("cycle (a -> b)") || err.contains("cycle (b -> a)"),
        "{err}"
    );
    assert!(err.contains("--group-by none"), "{err}");
}

#[test]
fn resources_set_requests_and_limits_and_a_task_takes_its_largest_node() {
    let mut spec = namespaced();
    spec.resources = Resources {
        cpu: Some("1".into()),
        memory: Some("1Gi".into()),
        gpu: None,
    };
    spec.nodes[4].tags = vec!["argo.cpu-2".into(), "argo.gpu-1".into()];
    spec.nodes[5].tags = vec!["argo.memory-4Gi".into(), "argo.cpu-500m".into()];
    let wf = render(&spec);
    let by_task: BTreeMap<String, String> = tasks(&wf)
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["template"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(by_task["load"], "kedro");
    assert_eq!(by_task["ingest"], "kedro-namespace");
    assert_eq!(by_task["model"], "kedro-namespace-cpu-2-memory-4gi-gpu-1");
    let plain = &template(&wf, "kedro")["container"]["resources"];
    assert_eq!(plain["requests"]["cpu"], "1");
    assert_eq!(plain["limits"]["memory"], "1Gi");
    assert!(plain["limits"].get("nvidia.com/gpu").is_none());
    let big = &template(&wf, "kedro-namespace-cpu-2-memory-4gi-gpu-1")["container"]["resources"];
    for side in ["requests", "limits"] {
        assert_eq!(big[side]["cpu"], "2");
        assert_eq!(big[side]["memory"], "4Gi");
        assert_eq!(big[side]["nvidia.com/gpu"], "1");
    }
    // Without defaults, only the tagged task gets resources.
    spec.resources = Resources::default();
    let wf = render(&spec);
    assert!(template(&wf, "kedro")["container"]
        .get("resources")
        .is_none());
    let names: Vec<&str> = wf["spec"]["templates"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kedro",
            "kedro-namespace",
            "kedro-namespace-cpu-2-memory-4gi-gpu-1",
            "dag",
            "cleanup"
        ]
    );
}

#[test]
fn run_options_reach_every_run_and_the_workflow_parameters() {
    let spec = ArgoSpec {
        pipeline: "ds".into(),
        pipeline_option: "--pipelines".into(),
        tags: vec!["train".into(), "score".into()],
        params: "alpha=0.1,name=x".into(),
        conf_source: Some("/conf".into()),
        env: "prod".into(),
        ..namespaced()
    };
    let wf = render(&spec);
    let expected_tail = [
        "-e",
        "{{workflow.parameters.env}}",
        "--tags",
        "train,score",
        "--params={{workflow.parameters.params}}",
        "--conf-source={{workflow.parameters.conf_source}}",
    ];
    for name in ["kedro", "kedro-namespace"] {
        let args = template(&wf, name)["container"]["args"]
            .as_sequence()
            .unwrap()
            .clone();
        assert_eq!(
            args[..3],
            [Value::from("run"), "--pipelines".into(), "ds".into()]
        );
        let tail: Vec<&str> = args[5..].iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(tail, expected_tail, "{name}");
    }
    let values: BTreeMap<&str, &str> = wf["spec"]["arguments"]["parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()));
            (p["name"].as_str().unwrap(), p["value"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        values,
        BTreeMap::from([
            ("image", "img:1"),
            ("env", "prod"),
            ("params", "alpha=0.1,name=x"),
            ("conf_source", "/conf")
        ])
    );
}

#[test]
fn the_secret_reaches_every_kedro_container_from_a_secret_key_ref() {
    let mut spec = namespaced();
    spec.secret = Some("vineyard-kedro".into());
    spec.nodes[0].tags = vec!["argo.cpu-3".into()];
    let wf = render(&spec);
    let mut seen = 0;
    for t in wf["spec"]["templates"].as_sequence().unwrap() {
        let Some(env) = t["container"]["env"].as_sequence() else {
            continue;
        };
        let secret: Vec<&Value> = env.iter().filter(|e| e["name"] == SECRET_ENV).collect();
        if t["name"] == "cleanup" {
            assert!(secret.is_empty());
            continue;
        }
        seen += 1;
        assert_eq!(secret.len(), 1);
        assert!(secret[0].get("value").is_none());
        let r = &secret[0]["valueFrom"]["secretKeyRef"];
        assert_eq!(
            (r["name"].as_str(), r["key"].as_str()),
            (Some("vineyard-kedro"), Some("secret"))
        );
    }
    assert_eq!(seen, 3); // kedro-cpu-3, kedro, kedro-namespace
                         // Also without the operator, with another key.
    spec.with_operator = false;
    spec.secret_key = "hmac".into();
    let wf = render(&spec);
    let env = &template(&wf, "kedro")["container"]["env"];
    assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["key"], "hmac");
}

fn with_io(mut spec: ArgoSpec, io: &[(&str, &[&str], &[&str])]) -> ArgoSpec {
    for (name, inputs, outputs) in io {
        let n = spec.nodes.iter_mut().find(|n| n.name == *name).unwrap();
        n.inputs = inputs.iter().map(|s| s.to_string()).collect();
        n.outputs = outputs.iter().map(|s| s.to_string()).collect();
    }
    spec
}

fn local(name: &str, kind: PodLocalKind, detail: &str) -> PodLocalDataset {
    PodLocalDataset {
        name: name.into(),
        kind,
        detail: detail.into(),
    }
}

#[test]
fn pod_local_data_crossing_tasks_is_refused_naming_both_tasks() {
    let io: &[(&str, &[&str], &[&str])] = &[
        ("ingest.a.clean", &[], &["clean"]),
        ("ingest.b.merge", &["clean"], &["merged"]),
        ("model.fit", &["merged"], &["fitted"]),
        ("model.score", &["fitted"], &["scores"]),
        ("report", &["scores", "merged"], &[]),
    ];
    let mut spec = with_io(namespaced(), io);
    spec.pod_local = vec![
        local("clean", PodLocalKind::Memory, "MemoryDataset"),
        local(
            "merged",
            PodLocalKind::LocalFile,
            "pandas.CSVDataset at data/merged.csv",
        ),
        local("fitted", PodLocalKind::Vineyard, "VineyardDataset"),
    ];
    let err = render_workflow(&spec).unwrap_err().to_string();
    assert!(err.starts_with("a dataset cannot cross pods: dataset \"merged\" (pandas.CSVDataset at data/merged.csv) is written by task \"ingest\" and read by tasks \"model\", \"report\""), "{err}");
    assert!(
        err.contains("--allow-local") && err.contains("s3://"),
        "{err}"
    );
    assert!(
        !err.contains("\"clean\"") && !err.contains("fitted"),
        "{err}"
    );

    spec.allow_local = true;
    let rendered = render_workflow(&spec).unwrap();
    assert_eq!(rendered.warnings.len(), 2, "{:?}", rendered.warnings);
    assert!(rendered.warnings[0]
        .contains("\"clean\" (MemoryDataset) is written and read inside task \"ingest\""));
    assert!(rendered.warnings[1].ends_with("(allowed by --allow-local)"));

    // One task per node: the memory dataset crosses too. Without the operator, so does vineyard.
    spec.group_by = GroupBy::None;
    spec.allow_local = false;
    let err = render_workflow(&spec).unwrap_err().to_string();
    assert!(err.starts_with("datasets cannot cross pods: dataset \"clean\" (MemoryDataset) is written by task \"ingest-a-clean\" and read by task \"ingest-b-merge\""), "{err}");
    assert!(!err.contains("fitted"), "{err}");
    spec.with_operator = false;
    let err = render_workflow(&spec).unwrap_err().to_string();
    assert!(err.contains("dataset \"fitted\" (VineyardDataset, without the operator's socket in the pods) is written by task \"model-fit\" and read by task \"model-score\""), "{err}");
}

#[test]
fn pod_local_data_that_no_other_task_reads_passes() {
    let io: &[(&str, &[&str], &[&str])] =
        &[("load", &["raw"], &["loaded"]), ("report", &[], &["final"])];
    let mut spec = with_io(namespaced(), io);
    spec.pod_local = vec![
        local("raw", PodLocalKind::LocalFile, "input"),
        local("final", PodLocalKind::LocalFile, "output"),
        local("loaded", PodLocalKind::Memory, ""),
    ];
    let rendered = render_workflow(&spec).unwrap();
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
}
