import textwrap

import pytest

from services.rules.engine import RuleEngine
from services.rules.kinds import INT, STRING, STRING_LIST, KindRegistry, KindSpec

CUSTOMER = KindSpec(
    name="test.customer",
    service="test",
    fields={"aum": INT, "monthly": INT, "age": INT, "card": STRING, "segs": STRING_LIST, "name": STRING},
    outputs={"tier": "scalar", "segments": "list", "flags": "list"},
    allow_attributes=True,
)

DOC = textwrap.dedent("""
    name: test.tiers
    kind: test.customer
    parameters: {pb_floor: 600000000, silver_age: 60}
    bands:
      - id: tier
        field: aum
        output: tier
        bands:
          - {value: MASS, below: 1000000}
          - {value: LONG_TAIL, from: 1000000, below: 5000000}
          - {value: AFFLUENT, from: 5000000, below: 20000000}
          - {value: WEALTH, from: 20000000, below: 600000000}
          - {value: PRIVATE_BANKING, from: 600000000}
    rules:
      - id: group.silver
        when: {age: {gte: {param: silver_age}}}
        then: {segments: [SILVER_HAIR]}
      - id: group.high_spend
        when: {card: {in: [PLATINUM, BLACK]}}
        then: {segments: [HIGH_SPEND]}
      - id: flag.pb_prospect
        when:
          any:
            - aum: {gte: {mul: [{param: pb_floor}, "0.8"]}, lt: {param: pb_floor}}
            - monthly: {gte: {param: pb_floor}}
        then: {flags: [PB_PROSPECT]}
    examples:
      - name: private banking floor
        input: {aum: 600000000, age: 30}
        expect: {tier: PRIVATE_BANKING, segments: [], flags: []}
      - name: prospect at 80%
        input: {aum: 480000000, age: 61, card: BLACK}
        expect: {tier: WEALTH, segments: [SILVER_HAIR, HIGH_SPEND], flags: [PB_PROSPECT]}
        expect_rules: [tier.WEALTH, group.silver, group.high_spend, flag.pb_prospect]
""")


@pytest.fixture
def kinds():
    return KindRegistry([CUSTOMER])


@pytest.fixture
def engine():
    return RuleEngine()


@pytest.fixture
def doc_text():
    return DOC
