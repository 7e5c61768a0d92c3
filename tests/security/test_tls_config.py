"""mTLS configuration: all three files or none; half a configuration never
silently falls back to plaintext."""
from __future__ import annotations

import pytest

from services.common.config import ConfigError, ServiceConfig


def test_no_tls_settings_means_plaintext(tmp_path):
    assert ServiceConfig.from_env("tiering", {"KEQUN_DATA_DIR": str(tmp_path)}).tls is None


def test_all_three_settings_enable_mtls_and_per_service_names_win(tmp_path):
    env = {"KEQUN_DATA_DIR": str(tmp_path), "KEQUN_TLS_CERT": "/c/shared.crt", "KEQUN_TLS_KEY": "/c/shared.key",
           "KEQUN_TLS_CLIENT_CA": "/c/ca.crt", "KEQUN_BENEFITS_TLS_CERT": "/c/benefits.crt"}
    tls = ServiceConfig.from_env("benefits", env).tls
    assert (str(tls.cert), str(tls.key), str(tls.ca)) == ("/c/benefits.crt", "/c/shared.key", "/c/ca.crt")


@pytest.mark.parametrize("missing", ["KEQUN_TLS_CERT", "KEQUN_TLS_KEY", "KEQUN_TLS_CLIENT_CA"])
def test_half_a_tls_configuration_is_refused(tmp_path, missing):
    env = {"KEQUN_DATA_DIR": str(tmp_path), "KEQUN_TLS_CERT": "/c/a.crt", "KEQUN_TLS_KEY": "/c/a.key",
           "KEQUN_TLS_CLIENT_CA": "/c/ca.crt"}
    del env[missing]
    with pytest.raises(ConfigError, match=missing):
        ServiceConfig.from_env("tiering", env)
