"""Project settings. Kedro's defaults are used; see
https://docs.kedro.org/en/stable/configure/configuration_basics/ for the options."""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
