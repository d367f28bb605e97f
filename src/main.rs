//! `vineyard-kedro`: store and deployment commands without a Kedro project.

fn main() {
    std::process::exit(vineyard_kedro::cli::run(std::env::args_os()));
}
