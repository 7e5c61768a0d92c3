"""Real processes: `python -m services.tiering` and `python -m services.benefits`
on real ports; benefits learns profiles only over gRPC from tiering."""
from __future__ import annotations

import subprocess
import sys
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from kequn.benefits.v1 import benefits_pb2 as pb
from kequn.benefits.v1 import benefits_pb2_grpc
from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc
from services.common.auth import bearer_metadata
from services.common.testing import REPO_ROOT, dev_tokens, free_port, start_service_process, wait_for_port

pytestmark = pytest.mark.e2e

if not (REPO_ROOT / "services" / "tiering" / "__main__.py").exists():
    pytest.skip("services/tiering has no __main__ yet", allow_module_level=True)


def _start(module, name, tmp_path, tokens, grpc_port, metrics_port, extra=None):
    env = {
        "KEQUN_DATA_DIR": str(tmp_path / name), "KEQUN_TOKENS_FILE": str(tokens.path),
        f"KEQUN_{name.upper()}_GRPC_PORT": str(grpc_port), f"KEQUN_{name.upper()}_METRICS_PORT": str(metrics_port),
        f"KEQUN_{name.upper()}_DATABASE_URL": f"sqlite:///{tmp_path / name / 'db.sqlite'}",
        "KEQUN_SERVICE_TOKEN": tokens["service"], **(extra or {}),
    }
    proc = start_service_process(module, env)
    wait_for_port("127.0.0.1", grpc_port, timeout=60)
    return proc


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def stack(tmp_path):
    tokens = dev_tokens(tmp_path)
    t_port, b_port, b_metrics = free_port(), free_port(), free_port()
    tiering = _start("services.tiering", "tiering", tmp_path, tokens, t_port, free_port())
    benefits = _start("services.benefits", "benefits", tmp_path, tokens, b_port, b_metrics,
                      {"KEQUN_TIERING_TARGET": f"127.0.0.1:{t_port}"})
    t_chan, b_chan = grpc.insecure_channel(f"127.0.0.1:{t_port}"), grpc.insecure_channel(f"127.0.0.1:{b_port}")
    yield {"tokens": tokens, "tiering": tiering, "benefits": benefits, "b_port": b_port, "b_metrics": b_metrics,
           "tier_stub": tiering_pb2_grpc.TieringServiceStub(t_chan),
           "stub": benefits_pb2_grpc.BenefitsServiceStub(b_chan)}
    t_chan.close()
    b_chan.close()
    for proc in (benefits, tiering):
        if proc.poll() is None:
            _stop(proc)


def _evaluate(stack, customer_id, annual_fen, **fields):
    snapshot = tiering_pb2.CustomerSnapshot(customer_id=customer_id, as_of="2025-03-01",
                                            annual_avg_aum_fen=annual_fen, monthly_avg_aum_fen=annual_fen,
                                            point_in_time_aum_fen=annual_fen, **fields)
    return stack["tier_stub"].EvaluateCustomer(
        tiering_pb2.EvaluateCustomerRequest(customer=snapshot, request_id=f"e-{customer_id}"),
        metadata=bearer_metadata(stack["tokens"]["core_banking"]), timeout=30)


def test_entitlements_and_claims_follow_tiering_and_survive_it_going_down(stack):
    tokens, stub = stack["tokens"], stack["stub"]
    mobile = bearer_metadata(tokens["mobile_banking"])
    ops = bearer_metadata(tokens["operations"])
    assert _evaluate(stack, "E2E-AFF", 10_000_000, payroll_employer_id="EMP1", mobile_banking_active=True).tier \
        == "AFFLUENT"
    assert _evaluate(stack, "E2E-TAIL", 2_000_000).tier == "LONG_TAIL"

    view = stub.ListEntitlements(pb.ListEntitlementsRequest(customer_id="E2E-AFF", include_locked=True),
                                 metadata=mobile, timeout=30)
    shown = {e.benefit_id: e for e in view.entitlements}
    assert view.tier == "AFFLUENT"
    assert {"PAYDAY_COUPON", "SCAN_PAY_GIFT", "LOBBY_GIFT"} <= {b for b, e in shown.items() if not e.locked}
    assert shown["AIRPORT_LOUNGE"].locked and shown["AIRPORT_LOUNGE"].unlock_tier == "WEALTH"
    assert shown["AIRPORT_LOUNGE"].unlock_gap_fen == 20_000_000 - 10_000_000

    with pytest.raises(grpc.RpcError) as err:
        stub.ListEntitlements(pb.ListEntitlementsRequest(customer_id="NOBODY"), metadata=mobile, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    stub.SetBudget(pb.SetBudgetRequest(group="PAYROLL", period=month, amount_fen=100_000, request_id="b1"),
                   metadata=ops, timeout=30)
    claim = stub.ClaimBenefit(pb.ClaimBenefitRequest(customer_id="E2E-AFF", benefit_id="PAYDAY_COUPON",
                                                     channel="WECHAT", request_id="c1"), metadata=mobile, timeout=30)
    assert claim.status == pb.CLAIM_STATUS_CLAIMED and claim.budget_spent_fen == 1000
    with pytest.raises(grpc.RpcError) as err:  # quota 1 a month, from another channel
        stub.ClaimBenefit(pb.ClaimBenefitRequest(customer_id="E2E-AFF", benefit_id="PAYDAY_COUPON",
                                                 channel="MOBILE", request_id="c2"), metadata=mobile, timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    _stop(stack["tiering"])  # tiering goes down
    again = stub.ListEntitlements(pb.ListEntitlementsRequest(customer_id="E2E-AFF"), metadata=mobile, timeout=30)
    assert again.tier == "AFFLUENT"  # last-known profile, younger than the staleness bound
    with pytest.raises(grpc.RpcError) as err:  # never fetched: nothing to fall back on
        stub.ListEntitlements(pb.ListEntitlementsRequest(customer_id="E2E-TAIL"), metadata=mobile, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    rec = subprocess.run([sys.executable, "-m", "services.cli.main", "benefits", "reconcile", "--target",
                          f"127.0.0.1:{stack['b_port']}"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'gen' / 'python'}",
                              "KEQUN_TOKEN": tokens["operations"], "PATH": "/usr/bin:/bin"}, timeout=60)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack['b_metrics']}/metrics", timeout=10).read().decode()
    assert 'kequn_benefits_claims_total{benefit_id="PAYDAY_COUPON",outcome="claimed"} 1.0' in metrics
    assert 'kequn_benefits_budget_left_fen{group="PAYROLL",period="%s"} 99000.0' % month in metrics
    assert "kequn_benefits_reconciliation_ok 1.0" in metrics
