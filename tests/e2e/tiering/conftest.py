import pytest

from tests.e2e.harness import Suite


@pytest.fixture
def suite(tmp_path):
    s = Suite(tmp_path, services=("tiering",))
    s.start("tiering")
    yield s
    s.close()


@pytest.fixture
def pg_suite(tmp_path, pg_url):
    s = Suite(tmp_path, services=("tiering",), database_urls={"tiering": pg_url})
    s.start("tiering")
    yield s
    s.close()
