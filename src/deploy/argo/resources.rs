//! Container resources of the `kedro` tasks: Kubernetes quantities, the
//! `argo.cpu-2` / `argo.memory-4Gi` / `argo.gpu-1` node tags, and the
//! largest value of a task's nodes.
//!
//! Kedro (0.19 and 1.x) accepts only letters, digits, `-`, `_` and `.` in a
//! tag, so the tag cannot be spelled `argo.cpu=2`; the resource and its
//! quantity are joined by `-` instead.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::deploy::Result;

/// Resources of one container: each `None` when not set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU quantity (`2`, `500m`, `0.5`).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory quantity (`4Gi`, `512Mi`, `1G`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Number of GPUs (`nvidia.com/gpu`), a whole number.
    #[serde(default)]
    pub gpu: Option<String>,
}

/// The resource names of the tags and options, with the Kubernetes resource each sets.
pub const RESOURCE_NAMES: [(&str, &str); 3] = [
    ("cpu", "cpu"),
    ("memory", "memory"),
    ("gpu", "nvidia.com/gpu"),
];
/// Tags that set a node's resources start with this (`argo.cpu-2`).
pub const TAG_PREFIX: &str = "argo.";

impl Resources {
    fn slot(&mut self, resource: &str) -> &mut Option<String> {
        match resource {
            "cpu" => &mut self.cpu,
            "memory" => &mut self.memory,
            _ => &mut self.gpu,
        }
    }

    /// `(Kubernetes resource name, quantity)` of every resource that is set.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        RESOURCE_NAMES
            .iter()
            .zip([&self.cpu, &self.memory, &self.gpu])
            .filter_map(|((_, k8s), v)| v.as_ref().map(|v| (*k8s, v.clone())))
            .collect()
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.gpu.is_none()
    }

    /// Checks every quantity; `what` says where they came from.
    pub fn validate(&self, what: &str) -> Result<()> {
        for ((name, _), v) in RESOURCE_NAMES
            .iter()
            .zip([&self.cpu, &self.memory, &self.gpu])
        {
            if let Some(v) = v {
                check_quantity(name, v).map_err(|e| invalid(format!("{what}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Each resource the larger of `self` and `other`.
    pub fn max(&self, other: &Resources) -> Resources {
        let pick = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(x), Some(y)) => {
                // Both were validated: compare their values, keep the spelling of the larger.
                let (vx, vy) = (quantity_value(x), quantity_value(y));
                match vx.partial_cmp(&vy) {
                    Some(Ordering::Less) => Some(y.clone()),
                    _ => Some(x.clone()),
                }
            }
            (x, y) => x.clone().or_else(|| y.clone()),
        };
        Resources {
            cpu: pick(&self.cpu, &other.cpu),
            memory: pick(&self.memory, &other.memory),
            gpu: pick(&self.gpu, &other.gpu),
        }
    }
}

/// A node's resources: `defaults` overridden by its `argo.<resource>-<quantity>` tags.
pub fn node_resources(node: &str, tags: &[String], defaults: &Resources) -> Result<Resources> {
    let mut out = defaults.clone();
    let mut seen: Vec<&str> = Vec::new();
    for tag in tags {
        let Some(rest) = tag.strip_prefix(TAG_PREFIX) else {
            continue;
        };
        let Some(&(name, _)) = RESOURCE_NAMES.iter().find(|(n, _)| {
            rest.strip_prefix(n)
                .is_some_and(|r| r.is_empty() || !r.starts_with(|c: char| c.is_ascii_alphabetic()))
        }) else {
            continue;
        };
        let value = rest[name.len()..].strip_prefix('-').ok_or_else(|| {
            invalid(format!(
                "node {node:?}: tag {tag:?} is not of the form {TAG_PREFIX}{name}-QUANTITY"
            ))
        })?;
        if seen.contains(&name) {
            return Err(invalid(format!(
                "node {node:?} has two {TAG_PREFIX}{name}-... tags"
            )));
        }
        seen.push(name);
        check_quantity(name, value)
            .map_err(|e| invalid(format!("node {node:?}: tag {tag:?}: {e}")))?;
        *out.slot(name) = Some(value.to_string());
    }
    Ok(out)
}

/// Decimal and binary suffixes of a Kubernetes quantity, with their factors.
const SUFFIXES: [(&str, f64); 16] = [
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("Pi", 1125899906842624.0),
    ("Ei", 1152921504606846976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
    ("", 1.0),
];

/// The value of a Kubernetes quantity (`500m` -> 0.5, `4Gi` -> 4294967296),
/// or `None` if it is not one: an unsigned decimal number followed by a
/// suffix or by an `e`/`E` exponent.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = if let Some(&(_, f)) = SUFFIXES.iter().find(|(sfx, _)| *sfx == suffix) {
        f
    } else {
        let exp = suffix.strip_prefix(['e', 'E'])?;
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        10f64.powi(exp.parse().ok()?)
    };
    Some(value * factor)
}

fn quantity_value(s: &str) -> f64 {
    parse_quantity(s).unwrap_or(0.0)
}

/// Checks a quantity for `resource`: a positive Kubernetes quantity, and a whole number of GPUs.
fn check_quantity(resource: &str, value: &str) -> std::result::Result<(), String> {
    match parse_quantity(value) {
        None => Err(format!(
            "{resource} {value:?} is not a Kubernetes quantity (such as 2, 500m, 4Gi)"
        )),
        Some(v) if v <= 0.0 => Err(format!("{resource} {value:?} is not positive")),
        Some(_) if resource == "gpu" && !value.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("gpu {value:?} is not a whole number of GPUs"))
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: Option<&str>, memory: Option<&str>, gpu: Option<&str>) -> Resources {
        Resources {
            cpu: cpu.map(Into::into),
            memory: memory.map(Into::into),
            gpu: gpu.map(Into::into),
        }
    }

    #[test]
    fn quantities_parse_as_kubernetes_reads_them() {
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity("4Gi"), Some(4.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("12E-1"), Some(1.2000000000000002));
        for bad in [
            "", "Gi", "1.2.3", "-1", "4GB", "4 Gi", "1e", "1e+", "abc", ".",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_larger_quantity_wins_whatever_its_spelling() {
        let a = res(Some("500m"), Some("4Gi"), None);
        let b = res(Some("2"), Some("1G"), Some("1"));
        assert_eq!(a.max(&b), res(Some("2"), Some("4Gi"), Some("1")));
        assert_eq!(b.max(&a), res(Some("2"), Some("4Gi"), Some("1")));
        assert_eq!(Resources::default().max(&a), a);
    }

    #[test]
    fn tags_override_the_defaults() {
        let defaults = res(Some("1"), Some("1Gi"), None);
        let tags = ["argo.cpu-2", "argo.gpu-1", "other", "argo.custom"].map(String::from);
        let r = node_resources("n", &tags, &defaults).unwrap();
        assert_eq!(r, res(Some("2"), Some("1Gi"), Some("1")));
        let r = node_resources("n", &["argo.memory-500Mi".into()], &defaults).unwrap();
        assert_eq!(r, res(Some("1"), Some("500Mi"), None));
        assert_eq!(
            r.entries(),
            [("cpu", "1".into()), ("memory", "500Mi".into())]
        );
    }

    #[test]
    fn bad_tags_are_refused_with_the_node_and_tag() {
        let d = Resources::default();
        let cases = [
            ("argo.cpu-two", "is not a Kubernetes quantity"),
            ("argo.gpu-0.5", "whole number"),
            ("argo.cpu-0", "not positive"),
            ("argo.memory4Gi", "of the form argo.memory-QUANTITY"),
        ];
        for (tag, expected) in cases {
            let err = node_resources("train", &[tag.into()], &d)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected) && err.contains("\"train\""),
                "{tag}: {err}"
            );
        }
        let twice = node_resources("t", &["argo.cpu-1".into(), "argo.cpu-2".into()], &d);
        assert!(twice
            .unwrap_err()
            .to_string()
            .contains("two argo.cpu-... tags"));
        // Other tags that merely start with a resource name are not resource tags.
        assert_eq!(node_resources("t", &["argo.cpus".into()], &d).unwrap(), d);
        let bad_default = res(Some("lots"), None, None).validate("--cpu");
        assert!(bad_default
            .unwrap_err()
            .to_string()
            .contains("--cpu: cpu \"lots\""));
    }
}
