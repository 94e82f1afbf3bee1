"""Unit tests of the credits shown on hub pages and by GET /hub/api/credits.

The cache is driven by a fake API server (a list and a watch over HTTP, like
kube-apiserver's), the pages are rendered with JupyterHub's own templates and loader
set-up, and the REST handler's answer is built from the same view.
"""

import asyncio
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.join(HERE, "..", "..", "charts", "hubcredits", "files")
sys.path.insert(0, os.path.abspath(FILES))

import hubcredits_hub as hh  # noqa: E402

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def iso(epoch):
    return hh._iso(epoch)


def make_account(name, users=(), balance=100, cap=100, rv="1", **kw):
    """A CreditAccount as the API server returns it (builder: keyword = field)."""
    status = {"balance": balance, "openedAt": iso(NOW - 3600), "conditions": []}
    spec = {"users": list(users), "cap": cap}
    if kw.get("grant"):
        amount, interval = kw["grant"]
        spec["grant"] = {"amount": amount, "interval": interval}
        status["grantedThrough"] = iso(kw.get("granted_through", NOW - 60))
    if kw.get("project"):
        spec["project"] = kw["project"]
    if kw.get("groups"):
        spec["groups"] = list(kw["groups"])
    status["servers"] = kw.get("servers", [])
    if kw.get("low"):
        status["conditions"].append(
            {"type": "Low", "status": "True", "reason": "BalanceLow", "message": kw["low"]}
        )
    if kw.get("stopped"):
        at, pod, message = kw["stopped"]
        status["conditions"].append(
            {
                "type": "Exhausted",
                "status": "True",
                "reason": "ServerStopped",
                "message": message,
                "lastTransitionTime": iso(at),
            }
        )
        status["ledger"] = [
            {"time": iso(at), "kind": "Stop", "amount": 0, "balance": balance,
             "subject": pod, "message": message}
        ]
    return {
        "apiVersion": "hubcredits.io/v1alpha1",
        "kind": "CreditAccount",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                     "managedFields": [{"manager": "x" * 200}]},
        "spec": spec,
        "status": status,
    }


def server(user, pod=None, value=10, interval="10m0s", started=NOW - 300, **kw):
    entry = {
        "id": f"r-{user}",
        "pod": pod or f"jupyter-{user}",
        "user": user,
        "wallet": kw.get("wallet", user),
        "billingValue": value,
        "billingInterval": interval,
        "reservedAt": iso(NOW - 400),
        "periodsPaid": 1,
        "paid": value,
    }
    if started is not None:
        entry["startedAt"] = iso(started)
        entry["paidThrough"] = iso(started + hh.parse_go_duration(interval))
    if kw.get("stopping"):
        entry["stopRequestedAt"] = iso(NOW - 10)
    return entry


def cache_of(*objects):
    cache = hh.CreditAccountCache("ns")
    cache.replace_all(objects, "1")
    cache.state = "synced"
    return cache


class FormattingTest(unittest.TestCase):
    def test_durations(self):
        cases = {
            "45 s": 45, "1 min": 60, "2 min": 61, "10 min": 600, "1 h": 3600,
            "1 h 30 min": 5400, "47 h 59 min": 172_799, "3 d 1 h": 3 * 86400 + 3700,
        }
        for want, seconds in cases.items():
            with self.subTest(want=want):
                self.assertEqual(hh.format_duration(seconds), want)

    def test_go_durations(self):
        cases = {"10m0s": 600, "1h0m0s": 3600, "1h30m": 5400, "1.5s": 1.5, "500ms": 0.5,
                 "": None, "10 minutes": None, "m": None, None: None}
        for text, want in cases.items():
            with self.subTest(text=text):
                self.assertEqual(hh.parse_go_duration(text), want)

    def test_price(self):
        self.assertEqual(hh.price_text(10, 600), "10 credits / 10 min")
        self.assertEqual(hh.price_text(1, 3600), "1 credit / 1 h")
        self.assertEqual(hh.price_text(0, 600), "free")


class UserCreditsTest(unittest.TestCase):
    def test_wallet_with_grant_and_running_server(self):
        cache = cache_of(
            make_account("alice", ["alice"], balance=50, cap=100, grant=(5, "10m0s"),
                         granted_through=NOW - 420, servers=[server("alice")]),
            make_account("bob", ["bob"]),
        )
        got = hh.user_credits(cache, "alice", now=NOW)
        self.assertTrue(got["available"])
        [account] = got["accounts"]
        self.assertEqual(account["name"], "alice")
        self.assertEqual(account["kind"], "wallet")
        self.assertEqual((account["balance"], account["cap"]), (50, 100))
        self.assertEqual(account["grant"]["text"], "+5 in 3 min")
        self.assertEqual(account["grant"]["next_at"], iso(NOW + 180))
        self.assertEqual(account["cost_text"], "10 credits / 10 min")
        # 10 per 600 s burnt, 5 per 600 s granted: 50 credits last 6000 s
        self.assertEqual(account["lasts_seconds"], 6000)
        self.assertEqual(account["lasts_text"], "lasts about 1 h 40 min")
        self.assertEqual(account["servers"][0]["paid_through"], iso(NOW + 300))
        self.assertIsNone(got["stop"])
        self.assertEqual(got["low"], [])
        json.dumps(got)  # the REST body is this, as JSON

    def test_wallet_lasts_with_its_pool(self):
        cache = cache_of(make_account("alice", ["alice"], balance=100, project="team",
                                      servers=[server("alice")]),
                         make_account("team", [], balance=200))
        [alice, team] = hh.user_credits(cache, "alice", now=NOW)["accounts"]
        self.assertEqual(alice["lasts_seconds"], 18000)  # (100 + 200) / (10 / 600 s)
        self.assertIsNone(team["lasts_seconds"])  # no server of the pool's own runs

    def test_user_in_two_pools_and_a_wallet(self):
        cache = cache_of(
            make_account("alice", ["alice"], project="physics"),
            make_account("physics", ["alice", "carol"], balance=700, cap=1000),
            make_account("chemistry", ["alice", "dave"], balance=30),
            make_account("dave", ["dave"]),
        )
        got = hh.user_credits(cache, "alice", now=NOW)
        kinds = {a["name"]: a["kind"] for a in got["accounts"]}
        self.assertEqual(kinds, {"alice": "wallet", "physics": "project", "chemistry": "project"})

    def test_pool_reached_only_through_the_wallet(self):
        cache = cache_of(make_account("alice", ["alice"], project="physics"),
                         make_account("physics", [], balance=7))
        names = [a["name"] for a in hh.user_credits(cache, "alice", now=NOW)["accounts"]]
        self.assertEqual(names, ["alice", "physics"])

    def test_cold_or_unavailable_cache_shows_nothing(self):
        cache = cache_of(make_account("alice", ["alice"]))
        for state in ("starting", "unavailable"):
            cache.state = state
            with self.subTest(state=state):
                got = hh.user_credits(cache, "alice", now=NOW)
                self.assertFalse(got["available"])
                self.assertEqual(got["accounts"], [])
        self.assertFalse(hh.user_credits(None, "alice")["available"])

    def test_stop_notice_until_started_again(self):
        message = "Stopped: account alice has 5 credits, the next 10m costs 10."
        stop_at = NOW - 120
        cache = cache_of(make_account("alice", ["alice"], balance=5,
                                      stopped=(stop_at, "jupyter-alice", message)))
        got = hh.user_credits(cache, "alice", now=NOW, pods={"jupyter-alice"})
        clock = time.strftime("%H:%M", time.gmtime(stop_at))
        self.assertEqual(
            got["stop"]["text"],
            f"Your server was stopped at {clock} UTC: account alice has 5 credits, "
            "the next 10m costs 10.",
        )
        self.assertEqual(got["stop"]["at"], iso(stop_at))
        again = hh.user_credits(cache, "alice", now=NOW, pods={"jupyter-alice"},
                                started_since=NOW - 5)
        self.assertIsNone(again["stop"])

    def test_stop_notice_in_a_shared_account_is_only_for_its_owner(self):
        message = "Stopped: account team has 1 credits, the next 10m costs 10."
        cache = cache_of(make_account("team", ["alice", "bob"], balance=1,
                                      stopped=(NOW - 60, "jupyter-bob", message)))
        self.assertIsNone(hh.user_credits(cache, "alice", now=NOW, pods={"jupyter-alice"})["stop"])
        self.assertIsNotNone(hh.user_credits(cache, "bob", now=NOW, pods={"jupyter-bob"})["stop"])

    def test_low_warning_with_a_running_server(self):
        cache = cache_of(
            make_account("alice", ["alice"], balance=15, servers=[server("alice")],
                         low="Balance 15 covers fewer than 3 more periods"),
            make_account("idle", ["alice"], balance=1, low="old"),
        )
        got = hh.user_credits(cache, "alice", now=NOW)
        self.assertEqual(
            got["low"],
            [{"account": "alice", "text": "Credits are running low: account alice has 15, your "
              "running servers cost 10 credits / 10 min, about 15 min left."}],
        )

    def test_other_users_servers_are_not_listed(self):
        cache = cache_of(make_account("team", ["alice", "bob"],
                                      servers=[server("alice"), server("bob")]))
        [team] = hh.user_credits(cache, "alice", now=NOW)["accounts"]
        self.assertEqual([s["user"] for s in team["servers"]], ["alice"])
        self.assertEqual(team["running_servers"], 2)
        [team] = hh.user_credits(cache, "alice", now=NOW, admin=True)["accounts"]
        self.assertEqual(len(team["servers"]), 2)


class GroupPoolTest(unittest.TestCase):
    def test_a_course_pool_through_a_group(self):
        cache = cache_of(make_account("physics-101", groups=["physics-101"]),
                         make_account("alice", ["alice"]))
        # No account names bob: the pool of his group (as the webhook chooses).
        self.assertEqual([a.name for a in cache.accounts_for("bob", ["physics-101"])],
                         ["physics-101"])
        self.assertEqual(cache.accounts_for("bob"), [])
        # alice's own wallet wins over her group's pool.
        self.assertEqual([a.name for a in cache.accounts_for("alice", ["physics-101"])], ["alice"])
        [pool] = hh.user_credits(cache, "bob", now=NOW, groups=["physics-101"])["accounts"]
        self.assertEqual(pool["name"], "physics-101")
        # The index follows watch events.
        cache.apply("MODIFIED", make_account("physics-101", groups=["chem-201"], rv="2"))
        self.assertEqual(cache.accounts_for("bob", ["physics-101"]), [])
        self.assertEqual([a.name for a in cache.accounts_for("bob", ["chem-201"])], ["physics-101"])
        cache.apply("DELETED", make_account("physics-101", groups=["chem-201"], rv="3"))
        self.assertEqual(cache.accounts_for("bob", ["chem-201"]), [])


class CacheEventsTest(unittest.TestCase):
    def test_add_modify_delete_and_user_moves(self):
        cache = cache_of(make_account("alice", ["alice"]))
        cache.apply("ADDED", make_account("team", ["alice", "bob"], rv="2"))
        self.assertEqual([a.name for a in cache.accounts_for("bob")], ["team"])
        cache.apply("MODIFIED", make_account("team", ["bob"], balance=3, rv="3"))
        self.assertEqual([a.name for a in cache.accounts_for("alice")], ["alice"])
        self.assertEqual(cache.get("team").balance, 3)
        cache.apply("DELETED", make_account("alice", ["alice"], rv="4"))
        self.assertEqual(cache.accounts_for("alice"), [])
        self.assertEqual(cache.resource_version, "4")

    def test_account_deleted_mid_session_leaves_a_page_that_renders(self):
        cache = cache_of(make_account("alice", ["alice"], project="physics"),
                         make_account("physics", ["alice"]))
        cache.apply("DELETED", make_account("physics", ["alice"]))
        names = [a["name"] for a in hh.user_credits(cache, "alice", now=NOW)["accounts"]]
        self.assertEqual(names, ["alice"])

    def test_garbage_is_tolerated(self):
        cache = cache_of({"metadata": {"name": "x"}, "spec": {"users": ["u", 3], "cap": "no"},
                          "status": {"balance": None, "servers": [{"billingValue": "ten"}],
                                     "conditions": ["bad", {"type": "Low"}]}})
        got = hh.user_credits(cache, "u", now=NOW)
        self.assertEqual(got["accounts"][0]["balance"], 0)
        self.assertNotIn("managedFields", repr(vars(hh.Account.__init__)))


class FakeAPIServer:
    """kube-apiserver's list and watch of CreditAccounts, enough for the cache."""

    def __init__(self, port=0):
        self.items = []
        self.pages = []  # LedgerPages, listed (their watch sends nothing)
        self.rv = 10
        self.forbidden = False
        self.pages_forbidden = False
        self.events = queue.Queue()
        self.lists = 0
        self.requests = []
        self.closed = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append((self.path, self.headers.get("Authorization")))
                if "/ledgerpages" in self.path:
                    return self.ledger_pages()
                if fake.forbidden:
                    return self.reply(403, {"kind": "Status", "code": 403,
                                            "message": "creditaccounts is forbidden"})
                if "watch=1" in self.path:
                    return self.watch()
                fake.lists += 1
                self.reply(200, {"kind": "CreditAccountList", "items": fake.items,
                                 "metadata": {"resourceVersion": str(fake.rv)}})

            def ledger_pages(self):
                if fake.pages_forbidden:
                    return self.reply(403, {"kind": "Status", "code": 403,
                                            "message": "ledgerpages is forbidden"})
                if "watch=1" not in self.path:
                    return self.reply(200, {"kind": "LedgerPageList", "items": fake.pages,
                                            "metadata": {"resourceVersion": str(fake.rv)}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                while not fake.closed.wait(0.05):
                    pass

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def watch(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                while True:
                    event = fake.events.get()
                    if event is None:
                        return
                    self.wfile.write(json.dumps(event).encode() + b"\n")
                    self.wfile.flush()

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.closed.set()
        self.events.put(None)
        self.server.shutdown()
        self.server.server_close()


def eventually(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


class CacheThreadTest(unittest.TestCase):
    def setUp(self):
        self.api = FakeAPIServer()
        self.addCleanup(self.api.close)

    def start(self):
        client = hh.KubeClient(self.api.url, None, token="t0ken-not-logged", namespace="ns")
        cache = hh.CreditAccountCache(None, client_factory=lambda: client, max_backoff=0.2)
        self.addCleanup(cache.stop)
        return cache.start()

    def test_list_then_watch(self):
        self.api.items = [make_account("alice", ["alice"], balance=7)]
        with self.assertLogs("JupyterHub", "INFO") as logs:
            cache = self.start()
            self.assertTrue(eventually(lambda: cache.available))
        self.assertEqual(cache.namespace, "ns")
        self.assertEqual(cache.get("alice").balance, 7)
        self.api.events.put({"type": "MODIFIED", "object": make_account("alice", ["alice"], 6)})
        self.api.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}})
        self.assertTrue(eventually(lambda: cache.resource_version == "99"))
        self.assertEqual(cache.get("alice").balance, 6)
        self.assertEqual(logs.output, ["INFO:JupyterHub:hubcredits: watching 1 CreditAccounts "
                                       "in namespace ns"])
        paths = [p for p, _ in self.api.requests]
        self.assertIn("/apis/hubcredits.io/v1alpha1/namespaces/ns/creditaccounts?limit=500",
                      paths)
        self.assertTrue(all(auth == "Bearer t0ken-not-logged" for _, auth in self.api.requests))

    def test_expired_watch_relists(self):
        cache = self.start()
        self.assertTrue(eventually(lambda: cache.available))
        self.api.items = [make_account("new", ["new"])]
        self.api.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        self.assertTrue(eventually(lambda: cache.get("new") is not None))
        self.assertGreaterEqual(self.api.lists, 2)

    def test_forbidden_is_one_log_line_and_no_box(self):
        self.api.forbidden = True
        with self.assertLogs("JupyterHub", "WARNING") as logs:
            cache = self.start()
            self.assertTrue(eventually(lambda: len(self.api.requests) >= 4))
        self.assertEqual(cache.state, "unavailable")
        self.assertEqual(len(logs.output), 1)
        self.assertIn("may not list CreditAccounts in namespace ns", logs.output[0])
        self.assertIn("hubReadAccess", logs.output[0])
        self.assertNotIn("t0ken", logs.output[0])
        self.api.forbidden = False  # the Role was added: it recovers by itself
        self.assertTrue(eventually(lambda: cache.available))

    def test_pages_forbidden_is_one_log_line_and_the_status_is_shown(self):
        self.api.pages_forbidden = True
        self.api.items = [make_account("alice", ["alice"], balance=7)]
        with self.assertLogs("JupyterHub", "WARNING") as logs:
            cache = self.start()
            self.assertTrue(eventually(lambda: cache.available))
            self.assertTrue(eventually(
                lambda: sum("/ledgerpages" in p for p, _ in self.api.requests) >= 3))
        self.assertEqual(len(logs.output), 1)
        self.assertIn("may not list LedgerPages in namespace ns", logs.output[0])
        self.assertEqual(hh.user_credits(cache, "alice")["accounts"][0]["balance"], 7)

    def test_pages_listed_and_shown(self):
        account = make_account("physics", ["bob"], balance=50, servers=[])
        account["status"]["pages"] = 1
        self.api.items = [account]
        self.api.pages = [make_page("physics", 1, [server("bob", wallet="physics")])]
        cache = self.start()
        self.assertTrue(eventually(lambda: cache.available and cache.pages.available))
        self.assertEqual(hh.user_credits(cache, "bob")["accounts"][0]["running_servers"], 1)

    def test_api_server_restart_shows_what_is_known(self):
        self.api.items = [make_account("alice", ["alice"], balance=7)]
        cache = self.start()
        self.assertTrue(eventually(lambda: cache.available))
        port = self.api.server.server_address[1]
        with self.assertLogs("JupyterHub", "INFO") as logs:
            self.api.close()
            self.assertTrue(eventually(lambda: cache.state == "unavailable"))
            got = hh.user_credits(cache, "alice")
            self.assertTrue(got["available"])  # last known, marked with its age
            self.assertEqual(got["accounts"][0]["balance"], 7)
            self.assertIn("the hub cannot reach the cluster", got["as_of_text"])
            cache.last_ok -= cache.stale_grace  # too old: shown no more
            self.assertFalse(hh.user_credits(cache, "alice")["available"])
            self.api = FakeAPIServer(port)
            self.addCleanup(self.api.close)
            self.api.items = [make_account("alice", ["alice"], balance=6)]
            self.assertTrue(eventually(lambda: cache.state == "synced"))
        self.assertEqual(cache.get("alice").balance, 6)
        self.assertEqual(len([x for x in logs.output if "no credits shown" in x]), 1)
        self.assertEqual(len([x for x in logs.output if "watching" in x]), 1)

    def test_api_server_down(self):
        client = hh.KubeClient("http://127.0.0.1:9", None, namespace="ns")
        cache = hh.CreditAccountCache(None, client_factory=lambda: client, max_backoff=0.2)
        self.addCleanup(cache.stop)
        with self.assertLogs("JupyterHub", "WARNING") as logs:
            cache.start()
            self.assertTrue(eventually(lambda: cache.state == "unavailable"))
            time.sleep(0.5)
        self.assertEqual(len(logs.output), 1)
        self.assertFalse(hh.user_credits(cache, "alice")["available"])


class PinnedPriceTest(unittest.TestCase):
    def pod(self, **annotations):
        return {"metadata": {"name": "jupyter-alice", "annotations": annotations}}

    def test_price_line(self):
        pod = self.pod(**{"hubcredits.io/billing-value": "10",
                          "hubcredits.io/billing-interval": "10m0s",
                          "hubcredits.io/account": "alice"})
        self.assertEqual(hh.pinned_price_text(pod),
                         "This server costs 10 credits / 10 min, paid from account alice.")
        pod["metadata"]["annotations"]["hubcredits.io/project"] = "physics"
        self.assertEqual(hh.pinned_price_text(pod), "This server costs 10 credits / 10 min, "
                         "paid from project physics, then account alice.")

    def test_not_priced(self):
        self.assertIsNone(hh.pinned_price_text(None))
        self.assertIsNone(hh.pinned_price_text(self.pod()))
        bad = {"hubcredits.io/billing-value": "x", "hubcredits.io/billing-interval": "1m",
               "hubcredits.io/account": "a"}
        self.assertIsNone(hh.pinned_price_text(self.pod(**bad)))

    def test_progress_announces_price_as_soon_as_pod_exists(self):
        class Reflector:
            pods = {}

        class Spawner:
            namespace, pod_name, pod_reflector = "ns", "jupyter-alice", Reflector()
            log = logging.getLogger("test.spawner")

            async def progress(self):
                yield {"progress": 50, "message": "Still waiting"}

        async def go():
            spawner = hh.credits_spawner_class(Spawner)()
            got = []

            async def create_pod_later():
                await asyncio.sleep(0.2)
                Reflector.pods["ns/jupyter-alice"] = self.pod(**{
                    "hubcredits.io/billing-value": "10",
                    "hubcredits.io/billing-interval": "10m0s",
                    "hubcredits.io/account": "alice"})

            asyncio.ensure_future(create_pod_later())
            async for event in spawner.progress():
                got.append(event["message"])
            return got

        got = asyncio.run(go())
        self.assertEqual(got, ["This server costs 10 credits / 10 min, paid from account alice.",
                               "Still waiting"])


class DeniedError(Exception):
    """A kubernetes_asyncio ApiException, by shape."""

    def __init__(self, status, message, reason=None):
        super().__init__(message)
        self.status = status
        body = {"kind": "Status", "message": message}
        if reason:  # the webhook's reason, as the API server passes it on (JSON of a
            # metav1.StatusCause: its Type is "reason")
            body["details"] = {"causes": [{"reason": "hubcredits.io/denial-reason",
                                           "message": reason}]}
        self.body = json.dumps(body).encode()


class PricedSpawner:
    """What profile pricing touches of a KubeSpawner (7.x)."""

    creates = []
    outcomes = {}

    def __init__(self, user=None, hub=None, config=None, name="", orm_spawner=None):
        self.user, self.hub, self.config, self.name = user, hub, config, name
        self.namespace = "ns"
        self.log = logging.getLogger("test.priced")
        self.user_options = {}
        self.api = self

    async def load_user_options(self):
        self.profile = self.user_options["profile"]

    async def get_pod_manifest(self):
        return {"metadata": {"labels": {"price": self.profile}},
                "spec": {"env": [{"name": "JUPYTERHUB_API_TOKEN", "value": "s3cret-t0ken"}]}}

    async def create_namespaced_pod(self, namespace, pod, dry_run=None, _request_timeout=None):
        PricedSpawner.creates.append((self.profile, dry_run))
        outcome = self.outcomes[self.profile]
        if isinstance(outcome, Exception):
            raise outcome
        return {"metadata": {"annotations": outcome}}

    profile_list = [{"slug": "small", "display_name": "Small", "description": "1 CPU"},
                    {"slug": "huge", "display_name": "Huge"},
                    {"slug": "broken", "display_name": "Broken"},
                    {"slug": "pool", "display_name": "Physics project"}]

    async def get_options_form(self):
        return "form"

    def _sorted_dict_values(self, value):
        return list(value.values())

    def _get_initialized_profile_list(self, profiles):
        return profiles

    def _render_options_form(self, profiles):
        return profiles


class ProfilePriceTest(unittest.TestCase):
    def setUp(self):
        hh._profile_prices.clear()
        hh._logged_once.clear()
        PricedSpawner.creates = []
        denied = 'admission webhook "pods.hubcredits.io" denied the request: Not enough ' \
            "credits to start this server: it costs 5000 credits every 10m, and account " \
            '"alice" has 500.'
        PricedSpawner.outcomes = {
            "small": {"hubcredits.io/billing-value": "10", "hubcredits.io/billing-interval":
                      "10m0s", "hubcredits.io/account": "alice"},
            "huge": DeniedError(403, denied, "NotEnoughCredits"),
            "broken": DeniedError(500, 'failed calling webhook: CEL error; env s3cret-t0ken'),
            "pool": DeniedError(403, 'admission webhook "pods.hubcredits.io" denied the request: '
                                'User "alice" may not spend from credit account "physics" (it '
                                "does not list them) — ask your hub admin.", "NotMember"),
        }

    def form(self):
        class User:
            name = "alice"

        spawner = hh.credits_spawner_class(PricedSpawner)(user=User())
        return asyncio.run(spawner.get_options_form())

    def test_prices_denial_and_unknown(self):
        with self.assertLogs("JupyterHub", "WARNING") as logs:
            small, huge, broken, pool = self.form()
        self.assertIn('1 CPU<br><span class="hubcredits-price text-muted" '
                      'data-affordable="true">10 credits / 10 min</span>', small["description"])
        self.assertEqual(huge["display_name"], "Huge (not enough credits)")
        self.assertIn("it costs 5000 credits every 10m, and account &quot;alice&quot; has 500.",
                      huge["description"])
        self.assertEqual(broken, PricedSpawner.profile_list[2])
        # a denial that is not about the balance is not called "not enough credits"
        self.assertEqual(pool["display_name"], "Physics project (not available)")
        self.assertIn("does not list them", pool["description"])
        self.assertEqual(logs.output, ["WARNING:JupyterHub:hubcredits: no price for profile "
                                       "broken: DeniedError 500"])
        self.assertEqual(sorted(PricedSpawner.creates),
                         [("broken", "All"), ("huge", "All"), ("pool", "All"), ("small", "All")])

    def test_cached_per_user_and_option(self):
        with self.assertLogs("JupyterHub", "WARNING"):
            self.form()
        self.form()  # no second log line either
        self.assertEqual(len(PricedSpawner.creates), 4)


def jupyterhub_templates():
    """JupyterHub's templates directory, as its app finds it."""
    from jupyterhub.app import JupyterHub

    return JupyterHub()._template_paths_default()[0]


class User:
    def __init__(self, name, spawners=None):
        self.name = name
        self.admin = False
        self.spawners = spawners or {}
        self.running = False
        self.active = False
        self.spawner = None
        self.url = f"/user/{name}/"
        self.server = None
        self.groups = []


class PagesTest(unittest.TestCase):
    """The templates, rendered with the loader JupyterHub builds (app.init_tornado_settings)."""

    def setUp(self):
        from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader

        tmp = tempfile.TemporaryDirectory(prefix="hubcredits-tpl-")
        self.addCleanup(tmp.cleanup)
        os.environ["HUBCREDITS_TEMPLATE_DIR"] = tmp.name
        self.addCleanup(os.environ.pop, "HUBCREDITS_TEMPLATE_DIR")
        base = jupyterhub_templates()
        ours = hh._template_dir()
        loader = ChoiceLoader([PrefixLoader({"templates": FileSystemLoader([base])}, "/"),
                               FileSystemLoader([ours, base])])
        self.env = Environment(loader=loader, autoescape=True)

    def render(self, name, cache, user):
        ns = dict(base_url="/hub/", prefix="/", user=user, login_url="/hub/login",
                  logout_url="/hub/logout", static_url=lambda *a, **k: "/static",
                  version_hash="", services=[], parsed_scopes={}, expanded_scopes=set(),
                  xsrf="x", xsrf_token="x", hubcredits=hh.CreditsView(cache),
                  default_server=None, named_server_limit_per_user=0, spawner_options_form="",
                  url="/hub/spawn", allow_named_servers=False, named_servers=[],
                  show_spawn_button=False, announcement=None, no_spawner_check=True,
                  for_user=None)
        return self.env.get_template(name).render(**ns)

    def test_home_page_box_and_notices(self):
        message = "Stopped: account alice has 5 credits, the next 10m costs 10."
        cache = cache_of(make_account("alice", ["alice"], balance=5, cap=100,
                                      stopped=(NOW - 60, "jupyter-alice", message)),
                         make_account("physics", ["alice", "bob"], balance=700, cap=1000))
        page = self.render("home.html", cache, User("alice"))
        self.assertIn('data-account="alice" data-balance="5"', page)
        self.assertIn('data-account="physics" data-balance="700"', page)
        self.assertIn("(project)", page)
        self.assertIn("Your server was stopped at", page)
        self.assertIn("hubcredits-stop", page)

    def test_pages_render_the_same_without_credits(self):
        for state in ("starting", "unavailable"):
            cache = cache_of(make_account("alice", ["alice"]))
            cache.state = state
            with self.subTest(state=state):
                with_glue = self.render("home.html", cache, User("alice"))
                without = self.env.get_template("templates/home.html").render(
                    **dict(base_url="/hub/", prefix="/", user=User("alice"),
                           static_url=lambda *a, **k: "/static", services=[],
                           parsed_scopes={}, expanded_scopes=set(), xsrf="x",
                           xsrf_token="x", version_hash="", default_server=None,
                           named_server_limit_per_user=0, allow_named_servers=False,
                           named_servers=[], login_url="/hub/login", logout_url="/hub/logout",
                           announcement=None, url="/hub/spawn", spawner_options_form="",
                           no_spawner_check=True, show_spawn_button=False, for_user=None))
                self.assertNotIn("hubcredits", with_glue)
                self.assertEqual(_squash(with_glue), _squash(without))

    def test_spawn_page_box(self):
        cache = cache_of(make_account("alice", ["alice"], balance=42))
        page = self.render("spawn.html", cache, User("alice"))
        self.assertIn('data-balance="42"', page)

    def test_escaping(self):
        cache = cache_of(make_account("alice", ["alice"], balance=5, low="x",
                                      servers=[server("<b>alice</b>", pod="p")]))
        cache.apply("ADDED", make_account("x", ["<script>"], balance=1))
        page = self.render("home.html", cache, User("<script>"))
        self.assertNotIn("<script>", page.split("</head>")[-1].replace("<script>\n", ""))

    def test_view_never_raises(self):
        class Broken:
            available = True

            def accounts_for(self, user):
                raise RuntimeError("boom")

        with self.assertLogs("JupyterHub", "WARNING") as logs:
            view = hh.CreditsView(Broken())
            self.assertFalse(view.for_user(User("alice"))["available"])
            self.assertFalse(view.for_user(User("alice"))["available"])
        self.assertEqual(len(logs.output), 1)


def _squash(page):
    return " ".join(page.split())


if __name__ == "__main__":
    logging.basicConfig()
    unittest.main()


def make_page(account, n, servers, rv="1"):
    """A LedgerPage as the API server returns it."""
    return {
        "apiVersion": "hubcredits.io/v1alpha1",
        "kind": "LedgerPage",
        "metadata": {"name": f"{account}-{n}", "namespace": "ns", "resourceVersion": rv},
        "spec": {"account": account},
        "status": {"seq": 3, "servers": servers},
    }


class LedgerPagesTest(unittest.TestCase):
    """A course pool's servers beyond the 64 of its status are on its LedgerPages."""

    def pool(self, pages=1):
        account = make_account("physics", (), balance=200, cap=1000, groups=["physics-101"],
                               servers=[server("alice", wallet="physics")])
        account["status"]["pages"] = pages
        return account

    def test_servers_on_pages_are_shown_and_counted(self):
        cache = cache_of(self.pool())
        ended = server("carol", wallet="physics")
        ended["endedAt"] = iso(NOW - 5)
        cache.pages.replace_all([
            make_page("physics", 1, [server("bob", wallet="physics"), ended]),
            make_page("other", 1, [server("dave", wallet="other")]),
        ], "1")
        cache.pages.state = "synced"
        got = hh.user_credits(cache, "bob", now=NOW, groups=["physics-101"])
        view = got["accounts"][0]
        self.assertEqual(view["running_servers"], 2)
        self.assertEqual([s["user"] for s in view["servers"]], ["bob"])
        self.assertEqual(view["cost_text"], "10 credits / 10 min + 10 credits / 10 min")
        self.assertEqual(view["lasts_seconds"], 200 * 600 // 20)
        # A page changes, then goes.
        cache.pages.apply("MODIFIED", make_page("physics", 1, [], rv="2"))
        self.assertEqual(hh.user_credits(cache, "bob", now=NOW, groups=["physics-101"])
                         ["accounts"][0]["running_servers"], 1)
        cache.pages.apply("ADDED", make_page("physics", 2, [server("bob", wallet="physics")]))
        cache.pages.apply("DELETED", make_page("physics", 1, []))
        self.assertEqual(len(cache.get("physics").servers), 2)

    def test_a_stop_on_a_page_is_told_to_its_user(self):
        account = self.pool()
        account["status"]["conditions"].append(
            {"type": "Exhausted", "status": "True", "reason": "ServerStopped",
             "message": "Stopped: not enough credits.", "lastTransitionTime": iso(NOW - 20)})
        cache = cache_of(account)
        stopping = server("bob", wallet="physics", stopping=True)
        cache.pages.replace_all([make_page("physics", 1, [stopping])], "1")
        cache.pages.state = "synced"
        got = hh.user_credits(cache, "bob", now=NOW, groups=["physics-101"])
        self.assertIsNotNone(got["stop"])
        self.assertIn("not enough credits", got["stop"]["text"])

    def test_pages_not_readable_shows_the_status(self):
        cache = cache_of(self.pool())
        self.assertFalse(cache.pages.available)
        got = hh.user_credits(cache, "alice", now=NOW, groups=["physics-101"])
        self.assertEqual(got["accounts"][0]["running_servers"], 1)
