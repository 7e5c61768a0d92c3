from pathlib import Path

import pytest

from services.common.config import ConfigError, ServiceConfig, service_target


@pytest.mark.parametrize("service, grpc_port, metrics_port", [
    ("tiering", 50051, 9101), ("assignment", 50052, 9102),
    ("scoring", 50053, 9103), ("benefits", 50054, 9104),
])
def test_defaults_follow_the_contract(service, grpc_port, metrics_port, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = ServiceConfig.from_env(service, {})
    assert (cfg.grpc_port, cfg.metrics_port) == (grpc_port, metrics_port)
    assert cfg.host == "127.0.0.1"
    assert cfg.data_dir == tmp_path / ".kequn"
    assert cfg.database_url == f"sqlite:///{tmp_path}/.kequn/{service}.db"
    assert cfg.tokens_file == tmp_path / ".kequn" / "tokens.yaml"
    assert cfg.rules_poll_seconds == 2
    assert cfg.max_concurrent_rpcs == 64
    assert cfg.log_level == "INFO"
    assert cfg.service_token is None


def test_overrides(tmp_path):
    env = {
        "KEQUN_TIERING_GRPC_PORT": "6000",
        "KEQUN_TIERING_METRICS_PORT": "0",
        "KEQUN_TIERING_DATABASE_URL": "postgresql://u@db/kequn",
        "KEQUN_DATA_DIR": str(tmp_path),
        "KEQUN_HOST": "0.0.0.0",
        "KEQUN_RULES_POLL_SECONDS": "0.5",
        "KEQUN_MAX_CONCURRENT_RPCS": "8",
        "KEQUN_SHUTDOWN_GRACE_SECONDS": "3",
        "KEQUN_LOG_LEVEL": "debug",
        "KEQUN_SERVICE_TOKEN": "s3cret",
        "KEQUN_ASSIGNMENT_GRPC_PORT": "7000",  # another service's: ignored
        "KEQUN_ASSIGNMENT_TARGET": "assignment:50052",
    }
    cfg = ServiceConfig.from_env("tiering", env)
    assert cfg.grpc_port == 6000 and cfg.metrics_port == 0
    assert cfg.database_url == "postgresql://u@db/kequn"
    assert cfg.tokens_file == tmp_path / "tokens.yaml"
    assert cfg.host == "0.0.0.0"
    assert cfg.rules_poll_seconds == 0.5
    assert cfg.max_concurrent_rpcs == 8
    assert cfg.shutdown_grace_seconds == 3
    assert cfg.log_level == "DEBUG"
    assert cfg.service_token == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.service_target("assignment") == "assignment:50052"
    assert cfg.service_target("scoring") == "127.0.0.1:50053"


def test_service_specific_setting_beats_global():
    env = {"KEQUN_MAX_CONCURRENT_RPCS": "8", "KEQUN_SCORING_MAX_CONCURRENT_RPCS": "2",
           "KEQUN_TOKENS_FILE": "/etc/kequn/tokens.yaml"}
    cfg = ServiceConfig.from_env("scoring", env)
    assert cfg.max_concurrent_rpcs == 2
    assert cfg.tokens_file == Path("/etc/kequn/tokens.yaml")
    assert ServiceConfig.from_env("benefits", env).max_concurrent_rpcs == 8


@pytest.mark.parametrize("env", [
    {"KEQUN_TIERING_GRPC_PORT": "abc"},
    {"KEQUN_TIERING_GRPC_PORT": "70000"},
    {"KEQUN_MAX_CONCURRENT_RPCS": "0"},
    {"KEQUN_RULES_POLL_SECONDS": "soon"},
    {"KEQUN_LOG_LEVEL": "LOUD"},
])
def test_bad_values_name_the_variable(env):
    with pytest.raises(ConfigError, match="KEQUN_"):
        ServiceConfig.from_env("tiering", env)


def test_unknown_service():
    with pytest.raises(ConfigError):
        ServiceConfig.from_env("payments", {})


def test_service_target_function():
    assert service_target("tiering", {}) == "127.0.0.1:50051"
    assert service_target("tiering", {"KEQUN_TIERING_TARGET": "dns:///tiering:50051"}) == "dns:///tiering:50051"
