"""Unit tests for charts/hubcredits/files/hubcredits_hub.py.

Run from the repository root (Debian: python3-kubernetes, jupyterhub, python3-flake8):

    /usr/bin/python3 -m unittest discover -s test/hub -v
"""

import asyncio
import io
import json
import logging
import os
import sys
import unittest

from tornado import web
from traitlets.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.join(HERE, "..", "..", "charts", "hubcredits", "files")
sys.path.insert(0, os.path.abspath(FILES))

import hubcredits_hub as hh  # noqa: E402

try:
    from kubernetes.client.exceptions import ApiException as SyncApiException
except ImportError:  # pragma: no cover - Debian's python3-kubernetes is expected
    SyncApiException = None

TOKEN = "5f1c0f3be2a24d6f9a3c1b7e8d9f0a1b"
OTHER_TOKEN = "c0ffee00c0ffee00c0ffee00c0ffee00"

SENTENCES = [
    "Not enough credits to start this server: it costs 10 credits every 10m, "
    'and account "alice" has 4 (next +5 in 3m).',
    'No credit account for user "bob" \u2014 ask your hub admin.',
    'User "bob" may not spend from account "physics" (it is not in its users).',
    "Not enough credits to start this server: R&D <gpu> costs 100% of 5 credits.",
]


def status_body(message, code=403, reason="Forbidden"):
    """A Kubernetes Status as kube-apiserver serialises it (Go escapes <, >, &)."""
    text = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"name": "jupyter-alice", "kind": "pods"},
            "code": code,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def denied_message(sentence, webhook=hh.WEBHOOK_NAME, pod="jupyter-alice"):
    return (
        f'pods "{pod}" is forbidden: admission webhook "{webhook}" denied the request: '
        f"{sentence}"
    )


class FakeHTTPResponse:
    """What both clients hand to ``ApiException(http_resp=...)``."""

    def __init__(self, status, reason, data, headers=None):
        self.status = status
        self.reason = reason
        self.data = data
        self._headers = headers or {"Audit-Id": "0c1d", "Content-Type": "application/json"}

    def getheaders(self):
        return self._headers


class AsyncioApiException(Exception):
    """Same shape as kubernetes_asyncio.client.exceptions.ApiException (which is not
    packaged in Debian): ``body`` is the raw ``bytes`` aiohttp read."""

    def __init__(self, status=None, reason=None, http_resp=None):
        if http_resp:
            self.status = http_resp.status
            self.reason = http_resp.reason
            self.body = http_resp.data
            self.headers = http_resp.getheaders()
        else:
            self.status, self.reason, self.body, self.headers = status, reason, None, None

    def __str__(self):
        return (
            f"({self.status})\nReason: {self.reason}\nHTTP response headers: {self.headers}\n"
            f"HTTP response body: {self.body}\n"
        )


def sync_exc(message, status=403, reason="Forbidden"):
    if SyncApiException is None:
        raise unittest.SkipTest("python3-kubernetes not installed")
    body = status_body(message, code=status, reason=reason)
    return SyncApiException(http_resp=FakeHTTPResponse(status, reason, body))


def async_exc(message, status=403, reason="Forbidden"):
    body = status_body(message, code=status, reason=reason).encode("utf-8")
    return AsyncioApiException(http_resp=FakeHTTPResponse(status, reason, body))


def run(coro):
    return asyncio.run(coro)


class DenialSentenceTest(unittest.TestCase):
    def test_sync_and_asyncio_shapes(self):
        for make in (sync_exc, async_exc):
            for sentence in SENTENCES:
                with self.subTest(client=make.__name__, sentence=sentence):
                    exc = make(denied_message(sentence))
                    self.assertEqual(hh.denial_sentence(exc), sentence)

    def test_message_without_forbidden_prefix(self):
        # kube-apiserver 1.37 answered a webhook that set code 403 with just this
        message = f'admission webhook "{hh.WEBHOOK_NAME}" denied the request: {SENTENCES[0]}'
        self.assertEqual(hh.denial_sentence(async_exc(message)), SENTENCES[0])

    def test_status_reason_variants(self):
        # controller-runtime before 0.15 put the text in Result.Reason; the API server
        # still builds the same message, only the Status reason differs.
        exc = async_exc(denied_message(SENTENCES[0]), reason=SENTENCES[0])
        self.assertEqual(hh.denial_sentence(exc), SENTENCES[0])

    def test_body_as_plain_text(self):
        exc = AsyncioApiException(
            http_resp=FakeHTTPResponse(403, "Forbidden", denied_message(SENTENCES[1]))
        )
        self.assertEqual(hh.denial_sentence(exc), SENTENCES[1])

    def test_wrapped_as_cause(self):
        inner = async_exc(denied_message(SENTENCES[2]))
        outer = RuntimeError("spawn failed")
        outer.__cause__ = inner
        self.assertEqual(hh.denial_sentence(outer), SENTENCES[2])

    def test_others_left_alone(self):
        cases = {
            "other webhook": async_exc(denied_message("quota", webhook="pods.quota.example")),
            "webhook name suffix": async_exc(denied_message("x", webhook="xpods.hubcredits.io")),
            "webhook name prefix": async_exc(
                denied_message("x", webhook="pods.hubcredits.io.evil")
            ),
            "webhook down": async_exc(
                'Internal error occurred: failed calling webhook "pods.hubcredits.io": '
                'failed to call webhook: Post "https://hubcredits-webhook:443/": '
                "connection refused",
                status=500,
                reason="InternalError",
            ),
            "server error naming a denial": async_exc(denied_message("x"), status=500),
            "quota": async_exc(
                'pods "jupyter-alice" is forbidden: exceeded quota: compute, '
                "requested: cpu=2, used: cpu=8, limited: cpu=8"
            ),
            "conflict": sync_exc('pods "jupyter-alice" already exists', 409, "AlreadyExists"),
            "invalid": sync_exc(
                'Pod "jupyter-alice" is invalid: spec.containers: Required value', 422, "Invalid"
            ),
            "no body": AsyncioApiException(status=403, reason="Forbidden"),
            "not an api error": ValueError(denied_message("x")),
            "timeout": asyncio.TimeoutError(),
            "none": None,
        }
        for name, exc in cases.items():
            with self.subTest(name):
                self.assertIsNone(hh.denial_sentence(exc))

    def test_empty_sentence_still_ours(self):
        exc = async_exc(denied_message(""))
        self.assertEqual(hh.denial_sentence(exc), hh._FALLBACK_SENTENCE)


class CreditsDeniedTest(unittest.TestCase):
    def test_pre_jupyterhub_6(self):
        cls = hh._make_denial_class(None)
        e = cls(SENTENCES[3])
        self.assertIsInstance(e, web.HTTPError)
        self.assertEqual(e.status_code, 403)
        self.assertEqual(e.jupyterhub_message, SENTENCES[3])
        # what JupyterHub's error pages and API render (log_message % args) despite the '%'
        self.assertEqual(e.log_message % e.args, SENTENCES[3])
        # User.spawn overwrites the reason; ours stays empty so pages keep the sentence
        e.reason = "error"
        self.assertIsNone(e.reason)
        self.assertEqual(str(e), f"HTTP 403: Forbidden ({SENTENCES[3]})")

    def test_jupyterhub_6_spawn_exception(self):
        class SpawnException(web.HTTPError):
            """The signature of jupyterhub.spawner.SpawnException (JupyterHub 6.0)."""

            def __init__(
                self, message, *, reason, log_message="", message_html="", status_code=400
            ):
                self.message = message
                self.reason = reason
                self.log_message = log_message or message
                self.message_html = message_html
                self.status_code = status_code
                super().__init__(status_code, message, reason=reason)

        cls = hh._make_denial_class(SpawnException)
        e = cls(SENTENCES[0])
        self.assertIsInstance(e, SpawnException)
        self.assertEqual((e.status_code, e.reason), (403, "credits"))
        self.assertEqual((e.message, e.jupyterhub_message), (SENTENCES[0], SENTENCES[0]))

    def test_module_picks_installed_jupyterhub(self):
        try:
            from jupyterhub.spawner import SpawnException
        except ImportError:
            SpawnException = None
        if SpawnException is None:
            self.assertNotIn("SpawnException", [b.__name__ for b in hh.CreditsDenied.__mro__])
        else:
            self.assertTrue(issubclass(hh.CreditsDenied, SpawnException))


class FakeKubeSpawner:
    """Just what the mixin touches of a KubeSpawner."""

    def __init__(self, outcome=None, events=(), log=None):
        self.outcome = outcome
        self._events = list(events)
        self.log = log or logging.getLogger("test.fake_kubespawner")
        self.api_token = TOKEN
        self._log_name = "alice"

    def start(self):
        # KubeSpawner.start is a plain method returning the _start() future
        async def _start():
            await asyncio.sleep(0)
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome

        self._start_future = asyncio.ensure_future(_start())
        return self._start_future

    @property
    def events(self):
        return list(self._events)

    async def progress(self):
        for i, event in enumerate(self._events):
            yield {
                "progress": 30 + i,
                "raw_event": event,
                "message": f"{event['lastTimestamp']} [{event['type']}] {event['message']}",
            }
        yield {"message": "Still waiting"}


CreditsFake = hh.credits_spawner_class(FakeKubeSpawner)


def event(reason, message, ts="2026-11-25T22:07:01Z", etype="Normal"):
    return {
        "reason": reason,
        "message": message,
        "lastTimestamp": ts,
        "type": etype,
        "metadata": {"uid": reason},
        "involvedObject": {"kind": "Pod", "name": "jupyter-alice"},
    }


PRICE = "This server costs 10 credits every 10m, paid from account alice (86 left)."


class MixinTest(unittest.TestCase):
    def test_denial_becomes_credits_denied(self):
        for make in (sync_exc, async_exc):
            api_exc = make(denied_message(SENTENCES[0]))
            with self.subTest(client=make.__name__):
                with self.assertLogs("test.fake_kubespawner", "WARNING") as logs:
                    with self.assertRaises(hh.CreditsDenied) as ctx:
                        run(CreditsFake(outcome=api_exc).start())
                self.assertEqual(ctx.exception.jupyterhub_message, SENTENCES[0])
                self.assertEqual(ctx.exception.status_code, 403)
                self.assertIs(ctx.exception.__cause__, api_exc)
                self.assertIn(SENTENCES[0], logs.output[0])

    def test_other_errors_untouched(self):
        for exc in (
            async_exc(denied_message("no", webhook="other.example")),
            sync_exc("conflict", 409),
            async_exc("boom", 500),
            RuntimeError("x"),
        ):
            with self.subTest(exc=type(exc).__name__):
                with self.assertRaises(type(exc)) as ctx:
                    run(CreditsFake(outcome=exc).start())
                self.assertIs(ctx.exception, exc)

    def test_success_passes_result_and_remembers_token(self):
        self.assertEqual(run(CreditsFake(outcome=("10.0.0.7", 8888)).start()), ("10.0.0.7", 8888))
        self.assertEqual(hh.LOG_FILTER.scrub(f"token {TOKEN}"), f"token {hh.REDACTED}")

    def test_start_puts_the_users_groups_on_the_pod(self):
        class Group:
            def __init__(self, name):
                self.name = name

        class User:
            groups = [Group("staff"), Group("physics-101"), Group(""), Group("g" * 256),
                      Group("staff")]

        class Annotated(FakeKubeSpawner):
            def __init__(self, **kw):
                super().__init__(**kw)
                self.user = User()
                self.extra_annotations = {"keep": "me"}

            def start(self):
                self.seen = dict(self.extra_annotations)
                return super().start()

        spawner = hh.credits_spawner_class(Annotated)(outcome=("10.0.0.7", 8888))
        run(spawner.start())
        want = {"keep": "me", "hubcredits.io/groups": '["physics-101","staff"]'}
        self.assertEqual(spawner.seen, want)
        # No groups: an empty list, so the webhook knows the hub said so.
        User.groups = []
        run(spawner.start())
        self.assertEqual(spawner.seen["hubcredits.io/groups"], "[]")
        # Not a KubeSpawner (no extra_annotations): left alone.
        plain = CreditsFake(outcome=1)
        plain.user = User()
        run(plain.start())
        self.assertFalse(hasattr(plain, "extra_annotations"))

    def test_coroutine_start(self):
        class AsyncBase(FakeKubeSpawner):
            async def start(self):
                raise async_exc(denied_message(SENTENCES[1]))

        with self.assertLogs("test.fake_kubespawner", "WARNING"):
            with self.assertRaises(hh.CreditsDenied):
                run(hh.credits_spawner_class(AsyncBase)().start())

    def collect(self, spawner):
        async def go():
            return [e async for e in spawner.progress()]

        return run(go())

    def test_price_first(self):
        events = [
            event(
                "Scheduled",
                "Successfully assigned hub/jupyter-alice to node1",
                ts="2026-11-25T22:07:01.123456Z",
            ),
            event("CreditsReserved", PRICE),
            event("Pulled", "Container image already present"),
        ]
        got = self.collect(CreditsFake(events=events))
        self.assertEqual(got[0]["message"], PRICE)
        self.assertEqual(got[0]["progress"], 30)
        self.assertEqual(
            [e["message"] for e in got[1:]],
            [
                "2026-11-25T22:07:01.123456Z [Normal] Successfully assigned hub/jupyter-alice"
                " to node1",
                "2026-11-25T22:07:01Z [Normal] Container image already present",
                "Still waiting",
            ],
        )

    def test_price_event_first_already(self):
        events = [event("CreditsReserved", PRICE), event("Scheduled", "assigned")]
        got = [e["message"] for e in self.collect(CreditsFake(events=events))]
        self.assertEqual(got, [PRICE, "2026-11-25T22:07:01Z [Normal] assigned", "Still waiting"])

    def test_no_price_event(self):
        events = [event("Scheduled", "assigned")]
        got = [e["message"] for e in self.collect(CreditsFake(events=events))]
        self.assertEqual(got, ["2026-11-25T22:07:01Z [Normal] assigned", "Still waiting"])

    def test_class_factory(self):
        self.assertIs(hh.credits_spawner_class(FakeKubeSpawner), CreditsFake)
        self.assertIs(hh.credits_spawner_class(CreditsFake), CreditsFake)
        self.assertEqual(CreditsFake.__name__, "CreditsFakeKubeSpawner")
        self.assertTrue(issubclass(CreditsFake, FakeKubeSpawner))

    def test_init_installs_filter_on_spawner_log(self):
        log = logging.getLogger("test.spawner_log")
        CreditsFake(log=logging.LoggerAdapter(log, {}))
        self.assertIn(hh.LOG_FILTER, log.filters)


def pod_manifest(token=TOKEN):
    from kubernetes import client

    pod = client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name="jupyter-alice",
            labels={
                "component": "singleuser-server",
                "app.kubernetes.io/managed-by": "kubespawner",
            },
            annotations={"hub.jupyter.org/username": "alice"},
        ),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="notebook",
                    image="quay.io/jupyter/base-notebook:latest",
                    env=[
                        client.V1EnvVar(name="JPY_API_TOKEN", value=token),
                        client.V1EnvVar(name="JUPYTERHUB_API_TOKEN", value=token),
                        client.V1EnvVar(name="JUPYTERHUB_USER", value="alice"),
                    ],
                )
            ]
        ),
    )
    return pod.to_str()


class LogFilterTest(unittest.TestCase):
    def setUp(self):
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"test.hub.{self.id()}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.logger.addHandler(handler)
        hh.install_log_filter(self.logger)

    def log_failed_for(self, exc):
        try:
            raise exc
        except Exception:
            self.logger.exception("Failed for %s", pod_manifest())
        return self.stream.getvalue()

    def test_denied_pod_manifest_not_logged(self):
        if SyncApiException is None:
            self.skipTest("python3-kubernetes not installed")
        out = self.log_failed_for(async_exc(denied_message(SENTENCES[0])))
        self.assertNotIn(TOKEN, out)
        self.assertNotIn("containers", out)
        self.assertNotIn("Traceback", out)
        self.assertEqual(
            out,
            (
                "ERROR Failed for jupyter-alice: denied by pods.hubcredits.io "
                f"(pod manifest not logged): {SENTENCES[0]}\n"
            ),
        )

    def test_other_failures_keep_manifest_without_token(self):
        if SyncApiException is None:
            self.skipTest("python3-kubernetes not installed")
        out = self.log_failed_for(sync_exc("Pod is invalid", 422, "Invalid"))
        self.assertNotIn(TOKEN, out)
        self.assertIn("'name': 'JUPYTERHUB_API_TOKEN'", out)
        self.assertIn(f"'value': '{hh.REDACTED}'", out)
        self.assertIn("'name': 'JUPYTERHUB_USER',", out)
        self.assertIn("'value': 'alice'", out)
        self.assertIn("Traceback", out)

    def test_env_style_values(self):
        for template in (
            "JUPYTERHUB_API_TOKEN={}",
            "env JPY_API_TOKEN: {} set",
            '{{"JUPYTERHUB_API_TOKEN": "{}"}}',
            "JPY_API_TOKEN='{}'",
        ):
            with self.subTest(template):
                self.logger.info(template.format(OTHER_TOKEN))
        out = self.stream.getvalue()
        self.assertNotIn(OTHER_TOKEN, out)
        self.assertEqual(out.count(hh.REDACTED), 4)

    def test_token_in_traceback(self):
        try:
            raise RuntimeError(f"bad env JUPYTERHUB_API_TOKEN={OTHER_TOKEN}")
        except RuntimeError:
            self.logger.exception("spawn failed")
        out = self.stream.getvalue()
        self.assertNotIn(OTHER_TOKEN, out)
        self.assertIn("Traceback", out)

    def test_remembered_token_anywhere(self):
        hh.LOG_FILTER.remember(TOKEN)
        self.logger.info("oauth client secret %s for alice", TOKEN)
        self.assertEqual(
            self.stream.getvalue(), f"INFO oauth client secret {hh.REDACTED} for alice\n"
        )

    def test_filter_twice_is_idempotent(self):
        handler = self.logger.handlers[0]
        handler.addFilter(hh.TokenScrubFilter())  # a second filter on the same path
        self.logger.info("JUPYTERHUB_API_TOKEN=%s", OTHER_TOKEN)
        self.assertEqual(self.stream.getvalue(), f"INFO JUPYTERHUB_API_TOKEN={hh.REDACTED}\n")

    def test_unrelated_records_unchanged(self):
        self.logger.info("User %s logged in with %d%% of %s", "alice", 50, "quota")
        self.assertEqual(self.stream.getvalue(), "INFO User alice logged in with 50% of quota\n")

    def test_broken_record_still_logged(self):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("only one",), None)
        self.assertTrue(hh.LOG_FILTER.filter(record))

    def test_install_log_filter_idempotent(self):
        hh.install_log_filter(self.logger)
        self.assertEqual(self.logger.filters.count(hh.LOG_FILTER), 1)
        self.assertEqual(self.logger.handlers[0].filters.count(hh.LOG_FILTER), 1)


class PlainSpawner:
    """A module-level spawner class that ``install`` can import by dotted name."""

    def start(self):
        return None


class InstallTest(unittest.TestCase):
    def test_wraps_configured_class(self):
        c = Config()
        c.JupyterHub.spawner_class = f"{__name__}.PlainSpawner"
        cls = hh.install(c)
        self.assertIs(c.JupyterHub.spawner_class, cls)
        self.assertTrue(issubclass(cls, hh.CreditsSpawnerMixin))
        self.assertTrue(issubclass(cls, PlainSpawner))
        self.assertIs(hh.install(c), cls)  # twice is harmless
        self.assertIn(hh.LOG_FILTER, logging.getLogger("JupyterHub").filters)

    def test_entry_point_name(self):
        c = Config()
        c.JupyterHub.spawner_class = "localprocess"
        from jupyterhub.spawner import LocalProcessSpawner

        self.assertTrue(issubclass(hh.install(c), LocalProcessSpawner))

    def test_explicit_base_class(self):
        c = Config()
        self.assertTrue(issubclass(hh.install(c, base=PlainSpawner), PlainSpawner))

    def test_credits_kubespawner_attribute(self):
        try:
            import kubespawner  # noqa: F401
        except ImportError:
            with self.assertRaises(ImportError):
                hh.CreditsKubeSpawner
        else:  # pragma: no cover - only where KubeSpawner is installed
            self.assertEqual(hh.CreditsKubeSpawner.__name__, "CreditsKubeSpawner")
        with self.assertRaises(AttributeError):
            hh.NoSuchThing

    def test_executed_as_jupyterhub_config_d_file(self):
        c = Config()
        c.JupyterHub.spawner_class = f"{__name__}.PlainSpawner"
        namespace = {"c": c, "get_config": lambda: c, "__name__": "jupyterhub_config"}
        with open(hh.__file__) as f:
            exec(compile(f.read(), "hubcredits_hub.py", "exec"), namespace)
        cls = c.JupyterHub.spawner_class
        self.assertTrue(issubclass(cls, PlainSpawner))
        self.assertEqual(cls.__mro__[1].__name__, "CreditsSpawnerMixin")


if __name__ == "__main__":
    unittest.main()
