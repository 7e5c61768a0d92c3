from services.common.migrations_env import run_env
from services.scoring.store import metadata

run_env(metadata)
