//! A Dockerfile and `.dockerignore` for a Kedro project (kedro-docker's
//! conventions), and a structural lint for Dockerfiles.
//!
//! The Dockerfile is a list of typed [`Instruction`]s rendered line by line,
//! so shell quoting, JSON-form arrays and `ARG` values are each handled in
//! exactly one place. The image: `ARG BASE_IMAGE`, the project requirements
//! installed with pip, `vineyard-kedro` installed, a non-root `kedro_docker`
//! user with `KEDRO_UID`/`KEDRO_GID` build args, the project copied with
//! `--chown`, the vineyard catalog generated at build time, `CMD kedro run`.

use serde::{Deserialize, Serialize};

use super::{DeployError, Result};

mod lint;
pub use lint::lint_dockerfile;

/// The default pip requirement: this very version, so the image runs what generated it.
pub const VINEYARD_REQUIREMENT: &str = concat!("vineyard-kedro==", env!("CARGO_PKG_VERSION"));

/// What `docker init` needs to know about the project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSpec {
    /// The project's Python package (named in the header comment).
    pub package_name: String,
    /// Default of the `BASE_IMAGE` build arg; needs an explicit tag or digest.
    #[serde(default = "default_base_image")]
    pub base_image: String,
    /// Requirements file relative to the project: `requirements.txt` for
    /// Kedro 0.19+/1.x, `src/requirements.txt` for 0.18 (see [`requirements_path`]).
    #[serde(default = "default_requirements")]
    pub requirements: String,
    /// Install `vineyard_requirement` and generate the vineyard catalog.
    #[serde(default = "yes")]
    pub with_vineyard: bool,
    /// The pip requirement for this package (default [`VINEYARD_REQUIREMENT`]).
    #[serde(default = "default_vineyard_requirement")]
    pub vineyard_requirement: String,
    /// Kedro environment the catalog is generated into (`-e`).
    #[serde(default = "default_env")]
    pub env: String,
    /// Pipeline whose datasets get catalog entries (`-p`).
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
}

fn default_base_image() -> String {
    "python:3.11-slim".into()
}
fn default_requirements() -> String {
    "requirements.txt".into()
}
fn yes() -> bool {
    true
}
fn default_vineyard_requirement() -> String {
    VINEYARD_REQUIREMENT.into()
}
fn default_env() -> String {
    "vineyard".into()
}
fn default_pipeline() -> String {
    "__default__".into()
}

impl DockerSpec {
    /// A spec with every default and the given package name.
    pub fn new(package_name: impl Into<String>) -> DockerSpec {
        DockerSpec {
            package_name: package_name.into(),
            base_image: default_base_image(),
            requirements: default_requirements(),
            with_vineyard: true,
            vineyard_requirement: default_vineyard_requirement(),
            env: default_env(),
            pipeline: default_pipeline(),
        }
    }
}

/// Where a project of this Kedro version keeps its requirements:
/// `src/requirements.txt` for 0.18 and older, `requirements.txt` otherwise.
pub fn requirements_path(kedro_version: &str) -> &'static str {
    let mut parts = kedro_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next(), parts.next()) {
        (Some(0), Some(minor)) if minor <= 18 => "src/requirements.txt",
        _ => "requirements.txt",
    }
}

/// One word of a shell-form `RUN`.
#[derive(Clone, Debug)]
enum Word {
    /// Taken literally (single-quoted if it needs quoting).
    Lit(String),
    /// Expanded by the shell: `${VAR}` references survive (double-quoted if needed).
    Expand(String),
}

/// One Dockerfile line (or logical line).
#[derive(Clone, Debug)]
enum Instruction {
    Comment(String),
    Blank,
    Arg {
        name: &'static str,
        default: String,
    },
    From {
        image: String,
        alias: Option<&'static str>,
    },
    /// Commands joined with `&&`, one per physical line.
    Run(Vec<Vec<Word>>),
    Copy {
        chown: Option<&'static str>,
        src: String,
        dest: String,
    },
    Workdir(&'static str),
    User(&'static str),
    Expose(u16),
    Cmd(Vec<&'static str>),
}

fn is_plain(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c) || extra.contains(c))
}

/// Shell quoting, the one place it happens.
fn shell_word(w: &Word) -> String {
    match w {
        Word::Lit(s) if is_plain(s, "") => s.clone(),
        Word::Lit(s) => format!("'{}'", s.replace('\'', r"'\''")),
        Word::Expand(s) if is_plain(s, "${}") => s.clone(),
        Word::Expand(s) => format!(
            "\"{}\"",
            s.replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('`', "\\`")
        ),
    }
}

/// A Dockerfile value (ARG default, COPY path): bare, or JSON-quoted when it has blanks or quotes.
fn docker_value(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn render_instruction(i: &Instruction) -> String {
    match i {
        Instruction::Comment(text) => format!("# {}", text.replace(['\n', '\r'], " ")),
        Instruction::Blank => String::new(),
        Instruction::Arg { name, default } => format!("ARG {name}={}", docker_value(default)),
        Instruction::From {
            image,
            alias: Some(a),
        } => format!("FROM {image} AS {a}"),
        Instruction::From { image, alias: None } => format!("FROM {image}"),
        Instruction::Run(cmds) => {
            let lines: Vec<String> = cmds
                .iter()
                .map(|c| c.iter().map(shell_word).collect::<Vec<_>>().join(" "))
                .collect();
            format!("RUN {}", lines.join(" && \\\n    "))
        }
        Instruction::Copy { chown, src, dest } => {
            let flag = chown.map(|c| format!("--chown={c} ")).unwrap_or_default();
            if docker_value(src) == *src && docker_value(dest) == *dest {
                format!("COPY {flag}{src} {dest}")
            } else {
                format!(
                    "COPY {flag}{}",
                    serde_json::to_string(&[src, dest]).unwrap_or_default()
                )
            }
        }
        Instruction::Workdir(dir) => format!("WORKDIR {dir}"),
        Instruction::User(user) => format!("USER {user}"),
        Instruction::Expose(port) => format!("EXPOSE {port}"),
        Instruction::Cmd(argv) => {
            format!("CMD {}", serde_json::to_string(argv).unwrap_or_default())
        }
    }
}

fn lit(words: &[&str]) -> Vec<Word> {
    words.iter().map(|w| Word::Lit((*w).to_string())).collect()
}

fn check_spec(spec: &DockerSpec) -> Result<()> {
    let bad = |what: &str, v: &str| {
        DeployError::Invalid(format!("{what} {v:?} is not usable in a Dockerfile"))
    };
    let image = &spec.base_image;
    if image.is_empty()
        || image
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Err(bad("base image", image));
    }
    if lint::image_problem(image).is_some() {
        return Err(DeployError::Invalid(format!(
            "base image {image:?} needs an explicit tag other than `latest` (for example python:3.11-slim)"
        )));
    }
    if spec.requirements.is_empty() || spec.requirements.contains(['\n', '\r']) {
        return Err(bad("requirements path", &spec.requirements));
    }
    for (what, v) in [
        ("environment", &spec.env),
        ("pipeline", &spec.pipeline),
        ("vineyard requirement", &spec.vineyard_requirement),
    ] {
        if v.is_empty() || v.contains(['\n', '\r']) {
            return Err(bad(what, v));
        }
    }
    Ok(())
}

fn instructions(spec: &DockerSpec) -> Vec<Instruction> {
    use Instruction::*;
    let stage = "runtime-environment";
    let user_args = || {
        [
            Arg {
                name: "KEDRO_UID",
                default: "999".into(),
            },
            Arg {
                name: "KEDRO_GID",
                default: "0".into(),
            },
        ]
    };
    let mut v = vec![
        Comment(format!(
            "Image of the Kedro project {}, generated by `kedro vineyard docker init`.",
            spec.package_name
        )),
        Arg {
            name: "BASE_IMAGE",
            default: spec.base_image.clone(),
        },
        From {
            image: "${BASE_IMAGE}".into(),
            alias: Some(stage),
        },
        Blank,
        Comment("install project requirements".into()),
        Copy {
            chown: None,
            src: spec.requirements.clone(),
            dest: "/tmp/requirements.txt".into(),
        },
        Run(vec![
            lit(&[
                "pip",
                "install",
                "--no-cache-dir",
                "-r",
                "/tmp/requirements.txt",
            ]),
            lit(&["rm", "-f", "/tmp/requirements.txt"]),
        ]),
    ];
    if spec.with_vineyard {
        v.push(Comment(
            "vineyard-kedro: VineyardDataset, runners and `kedro vineyard`".into(),
        ));
        v.push(Run(vec![vec![
            Word::Lit("pip".into()),
            Word::Lit("install".into()),
            Word::Lit("--no-cache-dir".into()),
            Word::Lit(spec.vineyard_requirement.clone()),
        ]]));
    }
    v.extend([Blank, Comment("add kedro user".into())]);
    v.extend(user_args());
    let exp = |s: &str| Word::Expand(s.into());
    v.extend([
        Run(vec![
            vec![
                Word::Lit("groupadd".into()),
                Word::Lit("-f".into()),
                Word::Lit("-g".into()),
                exp("${KEDRO_GID}"),
                Word::Lit("kedro_group".into()),
            ],
            [
                lit(&[
                    "useradd",
                    "-l",
                    "-m",
                    "-d",
                    "/home/kedro_docker",
                    "-s",
                    "/bin/bash",
                    "-g",
                ]),
                vec![
                    exp("${KEDRO_GID}"),
                    Word::Lit("-u".into()),
                    exp("${KEDRO_UID}"),
                    Word::Lit("kedro_docker".into()),
                ],
            ]
            .concat(),
        ]),
        Blank,
        Workdir("/home/kedro_docker"),
        Comment("numeric, so that Kubernetes' runAsNonRoot can check it".into()),
        User("${KEDRO_UID}:${KEDRO_GID}"),
        Blank,
        From {
            image: stage.into(),
            alias: None,
        },
        Blank,
        Comment("copy the whole project except what is in .dockerignore".into()),
    ]);
    v.extend(user_args());
    v.extend([
        Copy {
            chown: Some("${KEDRO_UID}:${KEDRO_GID}"),
            src: ".".into(),
            dest: ".".into(),
        },
        Blank,
        Expose(8888),
        Blank,
    ]);
    if spec.with_vineyard {
        v.push(Comment(
            "VineyardDataset entries for the pipeline's intermediate datasets".into(),
        ));
        v.push(Run(vec![lit(&[
            "kedro",
            "vineyard",
            "catalog",
            "create",
            "-p",
            &spec.pipeline,
            "-e",
            &spec.env,
        ])]));
        v.push(Blank);
    }
    v.push(Cmd(vec!["kedro", "run"]));
    v
}

/// Renders the Dockerfile for `spec`.
pub fn render_dockerfile(spec: &DockerSpec) -> Result<String> {
    check_spec(spec)?;
    let mut out = String::new();
    for i in instructions(spec) {
        out.push_str(&render_instruction(&i));
        out.push('\n');
    }
    Ok(out)
}

/// Patterns of the `.dockerignore`, kedro-docker's list, except that
/// `data/01_raw` stays in the image: the pods of an Argo workflow have no
/// volume to read the raw data from.
const DOCKERIGNORE: &[&str] = &[
    "# Kedro project files that do not belong in the image",
    "Dockerfile",
    ".dockerignore",
    ".git",
    ".venv",
    "**/__pycache__",
    "**/*.pyc",
    "**/.ipynb_checkpoints",
    "",
    "# potentially sensitive credentials and all local configuration",
    "conf/**/*credentials*",
    "conf/local",
    "!conf/local/.gitkeep",
    "",
    "# data and outputs, except the raw inputs the pipeline reads",
    "data",
    "!data/01_raw",
    "!data/**/.gitkeep",
    "logs",
    "notebooks",
    "references",
    "results",
    "!logs/.gitkeep",
    "!notebooks/.gitkeep",
    "!references/.gitkeep",
    "!results/.gitkeep",
];

/// The `.dockerignore` that goes with [`render_dockerfile`].
pub fn render_dockerignore() -> String {
    DOCKERIGNORE.iter().map(|l| format!("{l}\n")).collect()
}

/// The `docker build` command line for a project (argv, no shell): build
/// args for the user and base image, the tag, extra `docker_args` (already
/// split, as `shlex.split` does), and the build context last.
pub fn docker_build_command(
    image: &str,
    uid: u32,
    gid: u32,
    base_image: &str,
    docker_args: &[String],
    context: &str,
) -> Vec<String> {
    let mut cmd: Vec<String> = vec!["docker".into(), "build".into()];
    for (k, v) in [
        ("KEDRO_UID", uid.to_string()),
        ("KEDRO_GID", gid.to_string()),
        ("BASE_IMAGE", base_image.to_string()),
    ] {
        cmd.push("--build-arg".into());
        cmd.push(format!("{k}={v}"));
    }
    cmd.extend(["-t".to_string(), image.to_string()]);
    cmd.extend(docker_args.iter().cloned());
    cmd.push(context.to_string());
    cmd
}

#[cfg(test)]
mod tests;
