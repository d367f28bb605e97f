//! Unit tests of the Dockerfile renderer.

use super::*;

#[test]
fn rendered_dockerfile_follows_kedro_docker() {
    let text = render_dockerfile(&DockerSpec::new("iris")).unwrap();
    assert!(text.starts_with("# Image of the Kedro project iris"));
    assert!(text
        .contains("ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE} AS runtime-environment\n"));
    assert!(text.contains("COPY requirements.txt /tmp/requirements.txt\n"));
    assert!(text.contains("RUN pip install --no-cache-dir -r /tmp/requirements.txt && \\\n    rm -f /tmp/requirements.txt\n"));
    assert!(text.contains(&format!(
        "RUN pip install --no-cache-dir {VINEYARD_REQUIREMENT}\n"
    )));
    assert!(VINEYARD_REQUIREMENT.starts_with("vineyard-kedro=="));
    assert!(text.contains("useradd -l -m -d /home/kedro_docker -s /bin/bash -g ${KEDRO_GID} -u ${KEDRO_UID} kedro_docker\n"));
    assert!(text.contains("USER ${KEDRO_UID}:${KEDRO_GID}\n"));
    assert!(text.contains("COPY --chown=${KEDRO_UID}:${KEDRO_GID} . .\n"));
    assert!(text.contains("RUN kedro vineyard catalog create -p __default__ -e vineyard\n"));
    assert!(text.ends_with("CMD [\"kedro\",\"run\"]\n"));
    assert_eq!(lint_dockerfile(&text), Vec::<String>::new());
}

#[test]
fn without_vineyard_nothing_of_vineyard_remains() {
    let spec = DockerSpec {
        with_vineyard: false,
        requirements: "src/requirements.txt".into(),
        ..DockerSpec::new("p")
    };
    let text = render_dockerfile(&spec).unwrap();
    assert!(
        !text.contains("vineyard-kedro") && !text.contains("catalog create"),
        "{text}"
    );
    assert!(text.contains("COPY src/requirements.txt /tmp/requirements.txt\n"));
    assert_eq!(lint_dockerfile(&text), Vec::<String>::new());
}

#[test]
fn odd_values_are_quoted_once() {
    let spec = DockerSpec {
        vineyard_requirement: "vineyard-kedro>=0.25".into(),
        pipeline: "data science".into(),
        env: "it's".into(),
        requirements: "my reqs.txt".into(),
        ..DockerSpec::new("p")
    };
    let text = render_dockerfile(&spec).unwrap();
    assert!(text.contains("pip install --no-cache-dir 'vineyard-kedro>=0.25'\n"));
    assert!(
        text.contains("create -p 'data science' -e 'it'\\''s'\n"),
        "{text}"
    );
    assert!(text.contains("COPY [\"my reqs.txt\",\"/tmp/requirements.txt\"]\n"));
    assert_eq!(lint_dockerfile(&text), Vec::<String>::new());
    assert_eq!(
        shell_word(&Word::Expand("a ${X}\"".into())),
        "\"a ${X}\\\"\""
    );
}

#[test]
fn untagged_or_latest_base_images_are_refused() {
    for image in ["python", "python:latest", "my registry/python:3.11", ""] {
        let spec = DockerSpec {
            base_image: image.into(),
            ..DockerSpec::new("p")
        };
        assert!(render_dockerfile(&spec).is_err(), "{image}");
    }
    for image in [
        "python:3.10-slim",
        "localhost:5000/py:3.11",
        "python@sha256:abc",
    ] {
        let spec = DockerSpec {
            base_image: image.into(),
            ..DockerSpec::new("p")
        };
        assert!(render_dockerfile(&spec).is_ok(), "{image}");
    }
}

#[test]
fn requirements_location_depends_on_kedro_version() {
    assert_eq!(requirements_path("0.18.14"), "src/requirements.txt");
    assert_eq!(requirements_path("0.19.3"), "requirements.txt");
    assert_eq!(requirements_path("1.7.0"), "requirements.txt");
}

#[test]
fn dockerignore_keeps_raw_data_and_drops_credentials() {
    let text = render_dockerignore();
    assert!(text.lines().any(|l| l == "!data/01_raw"));
    assert!(text.lines().any(|l| l == "conf/**/*credentials*"));
    assert!(text.lines().any(|l| l == "conf/local"));
}

#[test]
fn build_command_puts_the_context_last() {
    let cmd = docker_build_command(
        "iris:1",
        1000,
        1000,
        "python:3.11-slim",
        &["--no-cache".into()],
        "/p",
    );
    assert_eq!(
        cmd,
        [
            "docker",
            "build",
            "--build-arg",
            "KEDRO_UID=1000",
            "--build-arg",
            "KEDRO_GID=1000",
            "--build-arg",
            "BASE_IMAGE=python:3.11-slim",
            "-t",
            "iris:1",
            "--no-cache",
            "/p"
        ]
    );
}
