from services.common.migrations_env import run_env
from services.rules import releases  # noqa: F401 - its tables join the metadata
from services.rules.store import metadata

run_env(metadata)
