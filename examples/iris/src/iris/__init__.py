"""iris: the Kedro pandas-iris example."""

__version__ = "0.1"
