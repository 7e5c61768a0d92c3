"""`kequn up` — the README's first command — brings up all four services with
demo data and stops them all on Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common.client import dial
from services.common.testing import free_port
from tests.e2e.harness import ORDER

pytestmark = pytest.mark.e2e


def test_kequn_up_serves_demo_data_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {**os.environ, "KEQUN_DATA_DIR": str(tmp_path / "data")}
    env.pop("KEQUN_TOKENS_FILE", None)
    ports = {}
    for service in ORDER:
        ports[service] = free_port()
        env[f"KEQUN_{service.upper()}_GRPC_PORT"] = str(ports[service])
        env[f"KEQUN_{service.upper()}_METRICS_PORT"] = str(free_port())
        env[f"KEQUN_{service.upper()}_TARGET"] = f"127.0.0.1:{ports[service]}"
    console_port = free_port()
    env["KEQUN_CONSOLE_PORT"] = str(console_port)
    up = subprocess.Popen([sys.executable, "-m", "services.cli.main", "up"], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 180
        for line in up.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop." in line or time.monotonic() > deadline:
                break
        output = "".join(lines)
        assert "kequn is up" in output, output
        for service in ORDER:
            assert f"127.0.0.1:{ports[service]}" in output
        tokens = json.loads((tmp_path / "data" / "dev-tokens.json").read_text())
        assert tokens["core_banking"] in output  # printed for the newcomer
        # Two rule owners, so a four-eyes release can be requested by one and approved by the other.
        assert tokens["rule_owner_1"] in output and tokens["rule_owner_2"] in output
        assert "kequn rules approve RELEASE_ID --as rule_owner_2" in output
        console = f"http://127.0.0.1:{console_port}/"
        assert f"Console: {console}" in output  # the web console's URL
        with urllib.request.urlopen(console + "signin", timeout=10) as page:
            assert page.status == 200 and "csrf_token" in page.read().decode()

        stub = tiering_pb2_grpc.TieringServiceStub(dial(f"127.0.0.1:{ports['tiering']}", tokens["core_banking"]))
        deadline = time.monotonic() + 120
        while True:  # the demo tiers its population in the background
            try:
                decision = stub.GetCustomerTier(tiering_pb2.GetCustomerTierRequest(customer_id="CUST-0010000"),
                                                timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        assert decision.tier and decision.ruleset.name == "tiering.tiers"
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, rest
    assert "stopped." in rest
    with pytest.raises(OSError):  # the console stopped too
        urllib.request.urlopen(f"http://127.0.0.1:{console_port}/healthz", timeout=2)
    for service in ORDER:  # nothing left listening
        with pytest.raises(Exception):
            tiering_pb2_grpc.TieringServiceStub(dial(f"127.0.0.1:{ports[service]}")).GetCustomerTier(
                tiering_pb2.GetCustomerTierRequest(customer_id="x"), timeout=1)
