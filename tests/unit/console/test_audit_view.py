"""The Operations page's reading of VerifyAuditChain: which sentence it
says, and that a broken chain is listed first. Pure."""
from __future__ import annotations

from kequn.common.v1 import audit_pb2 as pb
from services.console import i18n, views


def reply(*chains, complete=True):
    return pb.VerifyAuditChainResponse(chains=[pb.ChainVerdict(bucket=b, state=s, records_checked=n, head_seq=n,
                                                               first_bad_event_id=bad, problem=why)
                                               for b, s, n, bad, why in chains],
                                       complete=complete, records_checked=sum(c[2] for c in chains),
                                       ok=all(c[1] == pb.CHAIN_STATE_OK for c in chains) and complete)


def test_intact_chains_say_so():
    v = views.chain_verdict(reply((-1, pb.CHAIN_STATE_OK, 0, "", ""), (3, pb.CHAIN_STATE_OK, 5, "", "")))
    assert v.summary == "verify_ok" and v.broken == v.unchecked == 0 and v.records == 5
    assert [r.state for r in v.rows] == ["ok", "ok"]
    assert i18n.label(v.summary, "en", chains=len(v.rows), records=v.records).startswith("All 2 chains are intact")


def test_a_broken_chain_comes_first_and_outweighs_unchecked_ones():
    v = views.chain_verdict(reply((1, pb.CHAIN_STATE_OK, 2, "", ""), (4, pb.CHAIN_STATE_NOT_CHECKED, 0, "", ""),
                                  (9, pb.CHAIN_STATE_BROKEN, 3, "17", "record 17 (#3) of chain 9 does not verify"),
                                  complete=False))
    assert v.summary == "verify_broken" and v.broken == 1 and v.unchecked == 1
    assert (v.rows[0].bucket, v.rows[0].state, v.rows[0].bad_id) == (9, "broken", "17")
    assert [r.bucket for r in v.rows[1:]] == [1, 4]


def test_an_unfinished_walk_is_not_called_intact():
    v = views.chain_verdict(reply((1, pb.CHAIN_STATE_OK, 2, "", ""), (4, pb.CHAIN_STATE_NOT_CHECKED, 0, "", ""),
                                  complete=False))
    assert v.summary == "verify_partial" and v.unchecked == 1
    assert "kequn audit verify --service benefits" in i18n.label(v.summary, "en", unchecked=1, service="benefits")
