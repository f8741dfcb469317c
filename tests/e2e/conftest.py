import pytest

from tests.e2e.processes import Service, postgres_database, redis_server


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_url):
    """API + one worker against real Redis and PostgreSQL, as in production."""
    tmp = tmp_path_factory.mktemp("stack")
    with redis_server(tmp) as redis_url:
        service = Service(
            tmp, {"TRAINSERVE_DATABASE_URL": postgres_url, "TRAINSERVE_BROKER_URL": redis_url}
        )
        try:
            service.start_api()
            service.start_worker()
            yield service
        finally:
            service.stop()
