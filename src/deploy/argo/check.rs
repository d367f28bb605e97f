//! What `argo lint` checks about a workflow's structure, without a cluster:
//! the entrypoint and exit handler exist, template names are unique, DAG task
//! names are unique DNS-1123 labels, tasks name real templates, dependencies
//! name real tasks and form no cycle, every input parameter is supplied, and
//! every `{{inputs.parameters.X}}` a template uses is declared, as is every
//! `{{workflow.parameters.X}}` (in `spec.arguments`).

use std::collections::{HashMap, HashSet};

use serde_yaml::Value;

use crate::deploy::names::is_dns_label;

fn s(v: &Value) -> Option<&str> {
    v.as_str()
}

fn seq(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
}

fn param_names(v: Option<&Value>) -> Vec<(String, bool)> {
    let Some(v) = v else { return Vec::new() };
    seq(v, "parameters")
        .iter()
        .filter_map(|p| {
            Some((
                s(p.get("name")?)?.to_string(),
                p.get("value").is_some() || p.get("default").is_some(),
            ))
        })
        .collect()
}

/// The names after every `prefix` (`{{inputs.parameters.`) in `text`, up to `}}`.
fn uses<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices(prefix).map(move |(i, _)| {
        let rest = &text[i + prefix.len()..];
        rest.split("}}").next().unwrap_or("").trim()
    })
}

/// Problems `argo lint` would report about `yaml` (one message each); empty when it passes.
pub fn check_workflow(yaml: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let wf: Value = match serde_yaml::from_str(yaml) {
        Ok(v) => v,
        Err(e) => return vec![format!("not YAML: {e}")],
    };
    if wf.get("apiVersion").and_then(s) != Some("argoproj.io/v1alpha1")
        || wf.get("kind").and_then(s) != Some("Workflow")
    {
        problems.push("not an argoproj.io/v1alpha1 Workflow".into());
    }
    let Some(spec) = wf.get("spec") else {
        return [problems, vec!["no spec".into()]].concat();
    };
    let templates = seq(spec, "templates");
    let mut by_name: HashMap<String, &Value> = HashMap::new();
    for t in &templates {
        match t.get("name").and_then(s) {
            Some(n) if by_name.insert(n.to_string(), t).is_some() => {
                problems.push(format!("template {n} is defined twice"))
            }
            Some(_) => {}
            None => problems.push("a template has no name".into()),
        }
    }
    for key in ["entrypoint", "onExit"] {
        match spec.get(key).and_then(s) {
            Some(n) if !by_name.contains_key(n) => {
                problems.push(format!("{key} {n} is not a template"))
            }
            None if key == "entrypoint" => problems.push("no entrypoint".into()),
            _ => {}
        }
    }
    let workflow_params: HashSet<String> = param_names(spec.get("arguments"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (name, t) in &by_name {
        let text = serde_yaml::to_string(t).unwrap_or_default();
        for used in uses(&text, "{{workflow.parameters.") {
            if !workflow_params.contains(used) {
                problems.push(format!(
                    "template {name} uses undeclared workflow parameter {used}"
                ));
            }
        }
        let declared: HashSet<String> = param_names(t.get("inputs"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for used in uses(&text, "{{inputs.parameters.") {
            if !declared.contains(used) {
                problems.push(format!(
                    "template {name} uses undeclared input parameter {used}"
                ));
            }
        }
        if let Some(c) = t.get("container") {
            if c.get("image").and_then(s).is_none_or(str::is_empty) {
                problems.push(format!("template {name} has a container without an image"));
            }
        }
        if let Some(dag) = t.get("dag") {
            check_dag(name, &seq(dag, "tasks"), &by_name, &mut problems);
        }
    }
    problems
}

fn check_dag(
    dag_name: &str,
    tasks: &[Value],
    templates: &HashMap<String, &Value>,
    problems: &mut Vec<String>,
) {
    let mut names = HashSet::new();
    for t in tasks {
        let name = t.get("name").and_then(s).unwrap_or("");
        if !is_dns_label(name) {
            problems.push(format!(
                "dag {dag_name}: task name {name:?} is not a DNS-1123 label"
            ));
        }
        if !names.insert(name.to_string()) {
            problems.push(format!("dag {dag_name}: task {name} is defined twice"));
        }
    }
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for t in tasks {
        let name = t.get("name").and_then(s).unwrap_or("").to_string();
        let list: Vec<String> = seq(t, "dependencies")
            .iter()
            .filter_map(|d| s(d).map(String::from))
            .collect();
        for d in &list {
            if !names.contains(d) {
                problems.push(format!(
                    "dag {dag_name}: task {name} depends on unknown task {d}"
                ));
            }
        }
        deps.insert(name.clone(), list);
        let Some(template) = t.get("template").and_then(s) else {
            problems.push(format!("dag {dag_name}: task {name} names no template"));
            continue;
        };
        let Some(tpl) = templates.get(template) else {
            problems.push(format!(
                "dag {dag_name}: task {name} uses unknown template {template}"
            ));
            continue;
        };
        let given: HashSet<String> = param_names(t.get("arguments"))
            .into_iter()
            .filter(|(_, v)| *v)
            .map(|(n, _)| n)
            .collect();
        for (p, has_default) in param_names(tpl.get("inputs")) {
            if !has_default && !given.contains(&p) {
                problems.push(format!("dag {dag_name}: task {name} does not supply parameter {p} of template {template}"));
            }
        }
    }
    // Depth-first search for a cycle (0 = new, 1 = on the stack, 2 = done).
    fn visit(
        n: &str,
        deps: &HashMap<String, Vec<String>>,
        state: &mut HashMap<String, u8>,
    ) -> bool {
        match state.get(n) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        state.insert(n.to_string(), 1);
        let cyclic = deps
            .get(n)
            .into_iter()
            .flatten()
            .any(|d| visit(d, deps, state));
        state.insert(n.to_string(), 2);
        cyclic
    }
    let mut state = HashMap::new();
    if deps.keys().any(|n| visit(n, &deps, &mut state)) {
        problems.push(format!(
            "dag {dag_name}: the task dependencies have a cycle"
        ));
    }
}
