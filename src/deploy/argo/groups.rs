//! Which nodes run together in one task, the dependencies between tasks, and
//! the datasets that cannot cross from one task's pod to another's.
//!
//! Grouping by namespace follows Kedro 1.x's `Pipeline.group_nodes_by`: a
//! node with a namespace belongs to the group of its top-level namespace,
//! every other node is a group of its own, and a group depends on the groups
//! of its nodes' parents. Unlike Kedro's helper, a namespace and an
//! un-namespaced node of the same name stay two groups.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{invalid, ArgoSpec};
use crate::deploy::names::unique_dns_labels;
use crate::deploy::Result;

/// How nodes are put into tasks (`--group-by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One task per node.
    #[default]
    None,
    /// One task per top-level namespace; un-namespaced nodes alone.
    Namespace,
}

/// What a task runs: one node (`kedro run -n`) or a namespace (`--namespaces`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKind {
    /// A single node, by name.
    Node,
    /// Every node under a top-level namespace.
    Namespace,
}

/// One task of the workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The node name or the top-level namespace.
    pub key: String,
    /// See [`GroupKind`].
    pub kind: GroupKind,
    /// The DAG task name (a unique DNS-1123 label).
    pub task: String,
    /// Indices of the spec's nodes in this group, in spec order.
    pub nodes: Vec<usize>,
    /// Indices of the groups this one depends on, in first-seen order.
    pub deps: Vec<usize>,
}

/// The groups of `spec`'s nodes (which [`super::validate`] has checked), in
/// order of their first node; an error if grouping creates a cycle (Kedro
/// 0.19 lets a namespace be interrupted by another group's node).
pub fn group_nodes(spec: &ArgoSpec) -> Result<Vec<Group>> {
    let mut index: HashMap<(GroupKind, &str), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of = Vec::with_capacity(spec.nodes.len());
    for (i, node) in spec.nodes.iter().enumerate() {
        let (kind, key) = match (spec.group_by, node.namespace.as_deref()) {
            (GroupBy::Namespace, Some(ns)) if !ns.is_empty() => {
                (GroupKind::Namespace, ns.split('.').next().unwrap_or(ns))
            }
            _ => (GroupKind::Node, node.name.as_str()),
        };
        let g = *index.entry((kind, key)).or_insert_with(|| {
            groups.push(Group {
                key: key.to_string(),
                kind,
                task: String::new(),
                nodes: Vec::new(),
                deps: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].nodes.push(i);
        group_of.push(g);
    }
    let node_index: HashMap<&str, usize> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for (i, node) in spec.nodes.iter().enumerate() {
        let g = group_of[i];
        for d in &node.deps {
            let p = group_of[node_index[d.as_str()]];
            if p != g && !groups[g].deps.contains(&p) {
                groups[g].deps.push(p);
            }
        }
    }
    if let Some(cycle) = find_cycle(&groups) {
        let names: Vec<&str> = cycle.iter().map(|&g| groups[g].key.as_str()).collect();
        return Err(invalid(format!(
            "grouping by namespace makes the tasks depend on each other in a cycle ({}): \
             a namespace is interrupted by a node outside it; use --group-by none",
            names.join(" -> ")
        )));
    }
    let keys: Vec<String> = groups.iter().map(|g| g.key.clone()).collect();
    for (g, task) in groups.iter_mut().zip(unique_dns_labels(&keys)) {
        g.task = task;
    }
    Ok(groups)
}

/// A cycle of group indices, if there is one (iterative depth-first search).
fn find_cycle(groups: &[Group]) -> Option<Vec<usize>> {
    // 0 = new, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; groups.len()];
    for start in 0..groups.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(top) = stack.last_mut() {
            let g = top.0;
            if let Some(&d) = groups[g].deps.get(top.1) {
                top.1 += 1;
                match state[d] {
                    0 => {
                        state[d] = 1;
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(s, _)| *s == d).unwrap_or(0);
                        return Some(stack[from..].iter().map(|(s, _)| *s).collect());
                    }
                    _ => {}
                }
            } else {
                state[g] = 2;
                stack.pop();
            }
        }
    }
    None
}

/// Where a dataset that cannot cross pods lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodLocalKind {
    /// A `MemoryDataset`, declared or Kedro's default for a dataset without an entry.
    Memory,
    /// A file on the pod's own filesystem.
    LocalFile,
    /// A vineyard dataset in a workflow without the operator (no socket in the pods).
    Vineyard,
}

/// A dataset of the catalog that lives in one pod only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodLocalDataset {
    /// The dataset's name.
    pub name: String,
    /// See [`PodLocalKind`].
    pub kind: PodLocalKind,
    /// What the user sees: the type and where it is (`pandas.CSVDataset at data/02/x.csv`).
    #[serde(default)]
    pub detail: String,
}

/// What the pod-local datasets mean for this grouping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLocalReport {
    /// Datasets written by one task and read by another: each cannot work.
    pub crossing: Vec<String>,
    /// Datasets written and read inside one task: they work, in that pod only.
    pub within: Vec<String>,
}

fn quoted(tasks: &BTreeSet<&str>) -> String {
    tasks
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the pod-local datasets that a task writes and a task reads.
/// A vineyard dataset counts only without the operator.
pub fn pod_local_report(spec: &ArgoSpec, groups: &[Group]) -> PodLocalReport {
    let mut task_of = vec![""; spec.nodes.len()];
    for g in groups {
        for &n in &g.nodes {
            task_of[n] = g.task.as_str();
        }
    }
    let mut report = PodLocalReport::default();
    for ds in &spec.pod_local {
        if ds.kind == PodLocalKind::Vineyard && spec.with_operator {
            continue;
        }
        let mut writers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut readers: BTreeSet<&str> = BTreeSet::new();
        for (i, node) in spec.nodes.iter().enumerate() {
            if node.outputs.contains(&ds.name) {
                writers.entry(task_of[i]).or_default();
            }
            if node.inputs.contains(&ds.name) {
                readers.insert(task_of[i]);
            }
        }
        let mut detail = ds.detail.clone();
        if ds.kind == PodLocalKind::Vineyard {
            detail.push_str(if detail.is_empty() { "" } else { ", " });
            detail.push_str("without the operator's socket in the pods");
        }
        let what = if detail.is_empty() {
            format!("{:?}", ds.name)
        } else {
            format!("{:?} ({detail})", ds.name)
        };
        for writer in writers.keys() {
            let others: BTreeSet<&str> = readers.iter().copied().filter(|r| r != writer).collect();
            if !others.is_empty() {
                report.crossing.push(format!(
                    "dataset {what} is written by task {writer:?} and read by task{} {}",
                    if others.len() > 1 { "s" } else { "" },
                    quoted(&others)
                ));
            }
            if readers.contains(writer) {
                report.within.push(format!(
                    "dataset {what} is written and read inside task {writer:?}: it works there, \
                     in that pod only"
                ));
            }
        }
    }
    report
}
