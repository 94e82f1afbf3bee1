"""Real-hub test of the credits the hub glue shows; run it through run-real-hub.sh.

Runs one JupyterHub (the ``python`` running this file: Debian's JupyterHub 3.0, or the
JupyterHub 5.5 venv of ``../shared/third_party/hub5-venv.sh``) with the glue, against the
API server in ``KUBECONFIG`` where the hubcredits operator runs (``make dev``). The hub
reads CreditAccounts as its own ServiceAccount would: a token of a ServiceAccount bound
to the chart's hub Role (``templates/hub-integration/rbac.yaml``), nothing more.

Spawner: real KubeSpawner when it is importable (the 5.5 venv has 7.1), else the test's
``e2e_spawner.PodSpawner``. No kubelet runs pods here, so the test plays the kubelet: as
soon as a user's pod exists it marks it Running with IP 127.0.0.1, and a tiny HTTP server
on that port answers for the "notebook server". A spawn is then ready in under a second.

Checks, with accounts and policies of its own (prefix ``CREDITS_PREFIX``):

- home page: each account's balance equals the API server's, after a spawn and after a
  charge; the Low warning while a server runs on a low account;
- progress stream: the price is the first message after "Server requested", on a spawn
  that is ready in under a second;
- an operator stop (the account cannot pay the next period): the next hub page says why;
- ``GET /hub/api/credits``: the documented JSON for the user (token), 403 for someone
  else's, any user for an admin;
- a hub whose ServiceAccount has no Role: pages render, no credits box, one log line;
- with KubeSpawner: the profile list shows each option's price, an unaffordable one is
  marked (the dry-run pricing).

Environment: KUBECONFIG (required), HUB_NAMESPACE (default "default"), CREDITS_PREFIX
(default "cr<JupyterHub major>-"), CREDITS_SCREENSHOTS (a directory: save screenshots
with headless chromium), E2E_KEEP. Prints PASS/FAIL lines, then "N passed, M failed".
"""

import base64
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.abspath(os.path.join(HERE, "..", "..", "charts", "hubcredits", "files"))
sys.path.insert(0, HERE)

from real_hub_e2e import Checks, free_port, observed, page_text, visible_text  # noqa: E402

import jupyterhub  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

GROUP, VERSION = "hubcredits.io", "v1alpha1"
MAJOR = int(jupyterhub.__version__.split(".")[0])
try:
    import kubespawner  # noqa: F401

    SPAWNER = "kubespawner.KubeSpawner"
except ImportError:
    SPAWNER = "e2e_spawner.PodSpawner"


class Cluster:
    def __init__(self, namespace, prefix):
        config.load_kube_config()
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.rbac = client.RbacAuthorizationV1Api()
        self.ns = namespace
        self.p = prefix

    def account(self, name):
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, "creditaccounts", self.p + name
        )

    def balances(self, *names):
        return {self.p + n: self.account(n)["status"].get("balance", 0) for n in names}

    def apply(self, plural, name, spec):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": {"creditaccounts": "CreditAccount", "billingpolicies": "BillingPolicy"}[plural],
            "metadata": {"name": self.p + name, "namespace": self.ns},
            "spec": spec,
        }
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, self.p + name)
        except ApiException as e:
            if e.status != 404:
                raise
        deadline = time.monotonic() + 30
        while True:
            try:
                return self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.ns, plural, body)
            except ApiException as e:
                if e.status != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def wait_open(self, name, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.account(name).get("status", {}).get("openedAt"):
                return True
            time.sleep(0.2)
        return False

    def service_account_kubeconfig(self, path, name, with_role):
        """A kubeconfig for ServiceAccount ``name``, bound (or not) to the hub Role."""
        from kubernetes.client import (
            AuthenticationV1TokenRequest,
            V1ObjectMeta,
            V1ServiceAccount,
            V1TokenRequestSpec,
        )

        try:
            self.core.create_namespaced_service_account(
                self.ns, V1ServiceAccount(metadata=V1ObjectMeta(name=name))
            )
        except ApiException as e:
            if e.status != 409:
                raise
        self.hub_role(name, credits=with_role)
        token = self.core.create_namespaced_service_account_token(
            name, self.ns, AuthenticationV1TokenRequest(spec=V1TokenRequestSpec(
                audiences=[], expiration_seconds=3600))
        ).status.token
        cfg = self.core.api_client.configuration
        with open(cfg.ssl_ca_cert, "rb") as f:
            ca = base64.b64encode(f.read()).decode()
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": cfg.host,
                                                   "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u",
                                                   "namespace": self.ns}}],
            "current-context": "x",
        }
        with open(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "w") as f:
            json.dump(kubeconfig, f)
        return path

    def hub_role(self, service_account, credits=True):
        """Z2JH 4.4's hub Role (templates/hub/rbac.yaml) and, with ``credits``, the chart's
        hubReadAccess Role (templates/hub-integration/rbac.yaml), bound to the account."""
        roles = {
            "z2jh-hub": [
                {"apiGroups": [""],
                 "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                 "verbs": ["get", "watch", "list", "create", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
            ],
        }
        if credits:
            roles["hub-read"] = [{"apiGroups": ["hubcredits.io"],
                                  "resources": ["creditaccounts", "ledgerpages"],
                                  "verbs": ["get", "list", "watch"]}]
        for role, rules in roles.items():
            name = f"{self.p}{role}-{service_account}"
            body = {"metadata": {"name": name}, "rules": rules}
            binding = {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": service_account,
                              "namespace": self.ns}],
            }
            for create, obj in ((self.rbac.create_namespaced_role, body),
                                (self.rbac.create_namespaced_role_binding, binding)):
                try:
                    create(self.ns, obj)
                except ApiException as e:
                    if e.status != 409:
                        raise


class Kubelet(threading.Thread):
    """Marks each new pod of the test's users Running on 127.0.0.1 (there is no kubelet)."""

    def __init__(self, cluster, users, delay=0.2):
        super().__init__(daemon=True)
        self.cluster, self.users, self.delay = cluster, users, delay
        self.stop = threading.Event()
        self.done = set()

    def run(self):
        while not self.stop.is_set():
            try:
                pods = self.cluster.core.list_namespaced_pod(
                    self.cluster.ns, label_selector="component=singleuser-server"
                ).items
            except Exception:
                pods = []
            for pod in pods:
                user = (pod.metadata.annotations or {}).get("hub.jupyter.org/username")
                if user not in self.users or pod.metadata.uid in self.done:
                    continue
                if pod.metadata.deletion_timestamp:
                    continue
                time.sleep(self.delay)
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                status = {"status": {
                    "phase": "Running", "podIP": "127.0.0.1", "startTime": now,
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{
                        "name": "notebook", "ready": True, "restartCount": 0,
                        "image": "x", "imageID": "", "started": True,
                        "state": {"running": {"startedAt": now}}}]}}
                try:
                    self.cluster.core.patch_namespaced_pod_status(
                        pod.metadata.name, self.cluster.ns, status)
                    self.done.add(pod.metadata.uid)
                except ApiException:
                    pass
            self.stop.wait(0.05)


def notebook_server():
    """Stands in for every user's notebook server: any request gets a 200."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>notebook</body></html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class CreditsHub:
    def __init__(self, workdir, name, namespace, kubeconfig, port, profiles, user_labels=None,
                 glue=True):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.token = secrets.token_hex(16)
        self.log_path = os.path.join(self.dir, "hub.log")
        self.proxy_pid = os.path.join(self.dir, "proxy.pid")
        self.profiles = profiles
        self.user_labels = user_labels or {}
        self.glue = glue
        self.env = dict(
            os.environ,
            KUBECONFIG=kubeconfig,
            NODE_PATH=os.environ.get("NODE_PATH", "/usr/share/nodejs"),
            PYTHONPATH=os.pathsep.join([HERE, FILES, os.environ.get("PYTHONPATH", "")]).rstrip(":"),
            HUB_NAMESPACE=namespace,
            HUBCREDITS_TEMPLATE_DIR=os.path.join(self.dir, "templates"),
        )
        self.namespace = namespace
        self.port = port
        self.proc = None

    def config(self):
        spawner = ""
        if SPAWNER.startswith("kubespawner"):
            spawner = f"""\
c.KubeSpawner.namespace = {self.namespace!r}
c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
c.KubeSpawner.port = {self.port}
c.KubeSpawner.profile_list = {self.profiles!r}
"""
        else:  # the labels the profiles would add, by user
            spawner = f"c.Spawner.port = {self.port}\n"
            self.env["E2E_USER_LABELS"] = json.dumps(self.user_labels)
        return f"""\
c = get_config()  # noqa
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.pid_file = {self.proxy_pid!r}
c.ConfigurableHTTPProxy.auth_token = {secrets.token_hex(16)!r}
c.JupyterHub.db_url = "sqlite:///{self.dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret = bytes.fromhex({secrets.token_hex(32)!r})
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = {SPAWNER!r}
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.last_activity_interval = 3600
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 10
c.Spawner.poll_interval = 2
c.Authenticator.admin_users = {{"admin"}}
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "e2e", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "e2e", "scopes": ["admin:users", "admin:servers", "tokens"], "services": ["e2e"]}}
]
{spawner}{"import hubcredits_hub" if self.glue else ""}
{"hubcredits_hub.install(c)" if self.glue else ""}
"""

    def __enter__(self):
        path = os.path.join(self.dir, "jupyterhub_config.py")
        with open(path, "w") as f:
            f.write(self.config())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", path], cwd=self.dir, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"jupyterhub exited; see {self.log_path}:\n" + self.log()[-3000:])
            try:
                if requests.get(self.url + "/hub/api", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise SystemExit(f"jupyterhub did not answer on {self.url}; see {self.log_path}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            with open(self.proxy_pid) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def api(self, method, path, token=None, **kw):
        return requests.request(
            method, f"{self.url}/hub/api{path}",
            headers={"Authorization": f"token {token or self.token}"}, timeout=60, **kw)

    def user_token(self, user):
        self.api("POST", "/users", json={"usernames": [user]})
        r = self.api("POST", f"/users/{user}/tokens", json={"note": "credits e2e"})
        r.raise_for_status()
        return r.json()["token"]

    def login(self, user):
        session = requests.Session()
        session.get(f"{self.url}/hub/login", timeout=30)  # JupyterHub >= 4.1: the _xsrf cookie
        data = {"username": user, "password": "e2e"}
        if session.cookies.get("_xsrf"):
            data["_xsrf"] = session.cookies.get("_xsrf")
        r = session.post(f"{self.url}/hub/login?next=/hub/home", data=data,
                         allow_redirects=False, timeout=30)
        if r.status_code != 302:
            raise SystemExit(f"login as {user} failed: {r.status_code}")
        return session

    def page(self, session, path):
        r = session.get(f"{self.url}{path}", timeout=30)
        return r.status_code, page_text(r)

    def start(self, user, profile=None):
        body = {"profile": profile} if profile else {}
        return self.api("POST", f"/users/{user}/server", json=body)

    def progress(self, user, token, timeout=30):
        events = []
        r = requests.get(f"{self.url}/hub/api/users/{user}/server/progress",
                         headers={"Authorization": f"token {token}"}, stream=True,
                         timeout=timeout)
        deadline = time.monotonic() + timeout
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line.split(":", 1)[1]))
                if events[-1].get("failed") or events[-1].get("ready"):
                    break
            if time.monotonic() > deadline:
                break
        r.close()
        return events

    def stop(self, user, cluster, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("DELETE", f"/users/{user}/server").status_code in (202, 204, 400):
                model = self.api("GET", f"/users/{user}").json()
                if not model.get("pending") and not model.get("servers"):
                    break
            time.sleep(1)
        while time.monotonic() < deadline:
            try:
                cluster.core.read_namespaced_pod(f"jupyter-{user}", cluster.ns)
            except ApiException as e:
                if e.status == 404:
                    return True
            time.sleep(0.5)
        return False


def page_balances(page):
    return {name: int(value) for name, value in
            re.findall(r'data-account="([^"]+)" data-balance="(-?\d+)"', page)}


def matches_api(hub, session, cluster, names, timeout=10):
    """Poll until the home page's balances equal two identical reads of the API server."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        before = cluster.balances(*names)
        _, page = hub.page(session, "/hub/home")
        after = cluster.balances(*names)
        shown = page_balances(page)
        last = (shown, before)
        if before == after and all(shown.get(k) == v for k, v in before.items()):
            return True, last
        time.sleep(0.2)
    return False, last


def setup(cluster):
    p = cluster.p
    cluster.apply("billingpolicies", "fast", {
        "podSelector": {"matchLabels": {"hubcredits.io/e2e-price": p + "fast"}},
        "billingValue": 10, "billingInterval": "3s", "priority": 50})
    cluster.apply("billingpolicies", "slow", {
        "podSelector": {"matchLabels": {"hubcredits.io/e2e-price": p + "slow"}},
        "billingValue": 10, "billingInterval": "1m", "priority": 50})
    cluster.apply("billingpolicies", "huge", {
        "podSelector": {"matchLabels": {"hubcredits.io/e2e-price": p + "huge"}},
        "billingValue": 5000, "billingInterval": "10m", "priority": 50})
    cluster.apply("creditaccounts", "team", {"users": [], "cap": 1000, "initialBalance": 700})
    cluster.apply("creditaccounts", "alice", {
        "users": [p + "alice"], "cap": 1000, "initialBalance": 500, "project": p + "team",
        "grant": {"amount": 5, "interval": "2h"}})
    cluster.apply("creditaccounts", "dave",
                  {"users": [p + "dave"], "cap": 100, "initialBalance": 15})
    cluster.apply("creditaccounts", "erin",
                  {"users": [p + "erin"], "cap": 100, "initialBalance": 25})
    cluster.apply("creditaccounts", "carol",
                  {"users": [p + "carol"], "cap": 100, "initialBalance": 4})
    for name in ("team", "alice", "dave", "erin", "carol"):
        if not cluster.wait_open(name):
            raise SystemExit(f"the operator did not open the ledger of {p}{name}")


def profiles(p):
    def labels(price):
        return {"extra_labels": {"hubcredits.io/e2e-price": p + price}} if price else {}

    return [
        {"display_name": "Small", "slug": "small", "default": True,
         "description": "1 CPU", "kubespawner_override": labels(None)},
        {"display_name": "Fast", "slug": "fast", "description": "billed every 3 s",
         "kubespawner_override": labels("fast")},
        {"display_name": "Slow", "slug": "slow", "description": "billed every minute",
         "kubespawner_override": labels("slow")},
        {"display_name": "Huge", "slug": "huge", "description": "a whole node",
         "kubespawner_override": labels("huge")},
    ]


def kubespawner_profile(user):
    return None if SPAWNER.startswith("kubespawner") else user


def run(checks):
    namespace = os.environ.get("HUB_NAMESPACE", "default")
    prefix = os.environ.get("CREDITS_PREFIX", f"cr{MAJOR}-")
    cluster = Cluster(namespace, prefix)
    p = prefix
    setup(cluster)
    users = {p + u for u in ("alice", "dave", "erin", "carol")}
    kubelet = Kubelet(cluster, users)
    kubelet.start()
    notebook = notebook_server()
    port = notebook.server_address[1]
    workdir = tempfile.mkdtemp(prefix="hubcredits-credits-hub-")
    shots = os.environ.get("CREDITS_SCREENSHOTS")
    m = f"JupyterHub {jupyterhub.__version__} + {SPAWNER}"
    print(f"--- {m}", flush=True)
    try:
        kubeconfig = cluster.service_account_kubeconfig(
            os.path.join(workdir, "hub-sa.kubeconfig"), p + "hub", with_role=True)
        ks = SPAWNER.startswith("kubespawner")
        price = {"hubcredits.io/e2e-price": p + "fast"}
        user_labels = {p + "alice": price, p + "dave": price,
                       p + "erin": {"hubcredits.io/e2e-price": p + "slow"}}
        with CreditsHub(workdir, "hub", namespace, kubeconfig, port, profiles(p),
                        user_labels) as hub:
            alice, dave, erin, carol = (p + u for u in ("alice", "dave", "erin", "carol"))
            alice_token = hub.user_token(alice)
            session = hub.login(alice)

            # the home page before any spawn
            ok, seen = matches_api(hub, session, cluster, ["alice", "team"])
            checks.check(f"{m}: home page balances = API server's", ok, str(seen))
            status, page = hub.page(session, "/hub/home")
            text = visible_text(page)
            observed("home page", text[:400])
            checks.check(f"{m}: home page shows the next grant", "+5 in 1 h 59 min" in text
                         or "+5 in 2 h" in text, text[:600])

            # the profile list with prices (KubeSpawner only: dry-run pricing)
            if ks:
                status, page = hub.page(session, "/hub/spawn")
                text = visible_text(page)
                observed("spawn page", text[:800])
                checks.equal(f"{m}: spawn page answers", status, 200)
                for want in ("10 credits / 10 min", "10 credits / 3 s", "10 credits / 1 min"):
                    checks.check(f"{m}: profile list shows {want!r}", want in text, text[:1500])
                checks.check(f"{m}: unaffordable profile is marked",
                             "Huge (not enough credits)" in text
                             and "it costs 5000 credits every 10m" in text,
                             text[:1500])
                if shots:
                    screenshot(hub, session, "/hub/spawn", os.path.join(shots, "profiles.png"))

            # a spawn that is ready in under a second: the price comes second
            t0 = time.monotonic()
            r = hub.start(alice, "fast" if ks else None)
            checks.check(f"{m}: alice's spawn accepted", r.status_code in (201, 202), r.text)
            events = hub.progress(alice, alice_token)
            took = time.monotonic() - t0
            messages = [e.get("message", "") for e in events]
            observed(f"progress ({took:.2f} s)", messages)
            checks.check(f"{m}: spawn ready in under 2 s", bool(events) and events[-1].get(
                "ready") is True and took < 2.0, f"{took:.2f}s {messages}")
            price = ("This server costs 10 credits / 3 s, paid from "
                     f"project {p}team, then account {alice}.")
            checks.check(f"{m}: price is the first or second progress line",
                         price in messages[:2], f"{messages} lacks {price!r}")

            ok, seen = matches_api(hub, session, cluster, ["alice", "team"])
            checks.check(f"{m}: home page balances = API server's after the spawn", ok, str(seen))
            charged = cluster.account("team")["status"].get("totalCharged", 0)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and cluster.account(
                    "team")["status"].get("totalCharged", 0) <= charged:
                time.sleep(0.3)
            checks.check(f"{m}: the operator charged a period", cluster.account(
                "team")["status"].get("totalCharged", 0) > charged, "no charge in 20 s")
            ok, seen = matches_api(hub, session, cluster, ["alice", "team"])
            checks.check(f"{m}: home page balances = API server's after a charge", ok,
                         str(seen))
            status, page = hub.page(session, "/hub/home")
            text = visible_text(page)
            observed("home page, running", text[:600])
            checks.check(f"{m}: home page shows the running server's price",
                         "10 credits / 3 s" in text, text[:600])
            if shots:
                screenshot(hub, session, "/hub/home", os.path.join(shots, "home.png"))

            # REST
            r = hub.api("GET", "/credits", token=alice_token)
            body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") \
                else r.text
            observed("GET /hub/api/credits", body)
            checks.equal(f"{m}: GET /hub/api/credits is 200", r.status_code, 200)
            checks.check(
                f"{m}: GET /hub/api/credits has the documented shape",
                isinstance(body, dict) and body.get("user") == alice
                and [a["name"] for a in body["accounts"]] == [alice, p + "team"]
                and {"name", "kind", "balance", "cap", "grant", "servers", "lasts_seconds",
                     "low", "project"} <= set(body["accounts"][0])
                and body["accounts"][0]["servers"][0]["paid_through"] is not None,
                str(body)[:800])
            r = hub.api("GET", f"/credits/{dave}", token=alice_token)
            checks.equal(f"{m}: alice asking for dave's credits gets 403", r.status_code, 403)
            r = hub.api("GET", f"/credits?user={dave}", token=alice_token)
            checks.equal(f"{m}: ...also with ?user=", r.status_code, 403)
            r = hub.api("GET", f"/credits/{alice}")
            checks.check(f"{m}: an admin service may read alice's credits",
                         r.status_code == 200 and r.json()["user"] == alice, r.text[:300])
            r = requests.get(f"{hub.url}/hub/api/credits", timeout=10)
            checks.equal(f"{m}: no credentials: 403", r.status_code, 403)
            checks.check(f"{m}: alice's server stopped", hub.stop(alice, cluster), "pod left")

            # Low: erin's 25 credits cover fewer than 2 periods of 10 once she runs
            erin_session = hub.login(erin)
            hub.start(erin, "slow" if ks else None)
            erin_token = hub.user_token(erin)
            hub.progress(erin, erin_token)
            deadline, text = time.monotonic() + 20, ""
            while time.monotonic() < deadline:
                text = visible_text(hub.page(erin_session, "/hub/home")[1])
                if "Credits are running low" in text:
                    break
                time.sleep(0.5)
            observed("erin's home page", text[:500])
            checks.check(f"{m}: Low warning on the home page",
                         f"Credits are running low: account {erin} has 15" in text, text[:600])
            if shots:
                screenshot(hub, erin_session, "/hub/home", os.path.join(shots, "low.png"))
            checks.check(f"{m}: erin's server stopped", hub.stop(erin, cluster), "pod left")

            # an operator stop: dave's 15 credits pay one period of 10, not the next
            dave_session = hub.login(dave)
            dave_token = hub.user_token(dave)
            hub.start(dave, "fast")
            hub.progress(dave, dave_token)
            deadline, text = time.monotonic() + 30, ""
            while time.monotonic() < deadline:
                text = visible_text(hub.page(dave_session, "/hub/home")[1])
                if "Your server was stopped" in text:
                    break
                time.sleep(0.5)
            observed("dave's home page", text[:500])
            want = re.compile(r"Your server was stopped at \d\d:\d\d UTC: account "
                              + re.escape(dave) + r" has 5 credits, the next 3s costs 10\.")
            checks.check(f"{m}: after an operator stop the home page says why",
                         want.search(text) is not None, text[:600])
            if shots:
                screenshot(hub, dave_session, "/hub/home", os.path.join(shots, "stopped.png"))
            hub.stop(dave, cluster)

            # a denial, as a browser sees it
            if shots:
                carol_session = hub.login(carol)
                hub.start(carol, "small" if ks else None)
                time.sleep(1)
                screenshot(hub, carol_session, f"/hub/spawn-pending/{carol}",
                           os.path.join(shots, "denied.png"))

            log = hub.log()
            checks.check(f"{m}: hub log holds no user token", alice_token not in log, "leaked")
            checks.check(f"{m}: the cache watched as the hub's ServiceAccount",
                         "hubcredits: watching" in log, log[-2000:])

        # a hub whose ServiceAccount has no Role: same pages, no box, one log line
        kubeconfig = cluster.service_account_kubeconfig(
            os.path.join(workdir, "norole.kubeconfig"), p + "hub-norole", with_role=False)
        with CreditsHub(workdir, "norole", namespace, kubeconfig, port, profiles(p)) as hub:
            session = hub.login(p + "alice")
            time.sleep(1)
            status, page = hub.page(session, "/hub/home")
            checks.equal(f"{m}: without the Role the home page renders", status, 200)
            checks.check(f"{m}: without the Role there is no credits box",
                         'id="hubcredits"' not in page, "box shown")
            r = hub.api("GET", "/credits", token=hub.user_token(p + "alice"))
            checks.equal(f"{m}: without the Role GET /hub/api/credits is 503", r.status_code, 503)
            lines = [x for x in hub.log().splitlines() if "no credits shown" in x]
            observed("log", lines)
            checks.equal(f"{m}: without the Role, one log line", len(lines), 1)
    finally:
        kubelet.stop.set()
        notebook.shutdown()
        if os.environ.get("E2E_KEEP") or checks.failed:
            print(f"work directory kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def screenshot(hub, session, path, out):
    """A headless chromium screenshot of a hub page as the user (``session``) sees it."""
    import browser

    os.makedirs(os.path.dirname(out), exist_ok=True)
    browser.screenshot(f"{hub.url}{path}", session.cookies, out)
    print(f"     screenshot {out}", flush=True)


def main():
    checks = Checks()
    try:
        run(checks)
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        checks.check("setup", False, e.code)
    except Exception as e:
        import traceback

        traceback.print_exc()
        checks.check("run", False, f"{type(e).__name__}: {e}")
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
