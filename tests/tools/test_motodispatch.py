"""The local stack's moto server finds a request's service once per host name
(captioner_tools.local.motodispatch), with moto's own answer."""

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from captioner_tools.local import motodispatch

HOSTS = (
    None,
    "moto_api",
    "dynamodb.us-east-1.amazonaws.com",
    "s3.amazonaws.com",
    "bucket.s3.us-east-1.amazonaws.com",
    "sqs.us-east-1.amazonaws.com",
    "events.us-east-1.amazonaws.com",
    "secretsmanager.us-east-1.amazonaws.com",
    "127.0.0.1:5000",
)


def test_each_host_gets_moto_s_own_backend_and_is_looked_up_once(monkeypatch):
    moto_says = {h: DomainDispatcherApplication(create_backend_app).get_backend_for_host(h)
                 for h in HOSTS}  # fmt: skip
    assert moto_says["dynamodb.us-east-1.amazonaws.com"] == "dynamodb"
    motodispatch.install()
    motodispatch.install()  # idempotent
    app = DomainDispatcherApplication(create_backend_app)
    assert {h: app.get_backend_for_host(h) for h in HOSTS} == moto_says

    from moto import backends

    def scan() -> None:
        raise AssertionError("looked up again")

    monkeypatch.setattr(backends, "list_of_moto_modules", scan)
    assert {h: app.get_backend_for_host(h) for h in HOSTS} == moto_says
