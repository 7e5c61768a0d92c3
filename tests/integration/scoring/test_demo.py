"""The demo loads a calculated period with staff of every role, once."""
from services.scoring.demo import STAFF, load_into


def test_demo_period_has_every_role_calculated_and_loads_once(scoring):
    scoring.books.sizes.update({f"WM-OUT-00{b}-{n}": 400 for b in (1, 2, 3) for n in (1, 2, 3)})
    assert load_into(scoring) is True
    page = scoring.list_scores("2025", page_size=1000)
    assert {s.role for s in page.scores} == set(STAFF)
    assert len(page.scores) == 3 + 3 + 9 + 6 + 6 + 6
    assert all(s.status == "CALCULATED" and s.total != "" for s in page.scores)
    assert scoring.get_score("WM-OUT-001-1", "2025").peer_group_size == 3
    assert load_into(scoring) is False
    assert len(scoring.list_scores("2025", page_size=1000).scores) == len(page.scores)
