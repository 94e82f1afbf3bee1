"""Real-hub test of the hubcredits hub glue; run it through run-real-hub.sh.

Needs: an API server (``KUBECONFIG``) on which the hubcredits operator's webhook
``pods.hubcredits.io`` runs and denies ``DENIED_USER``; Debian's ``jupyterhub`` (3.0),
``python3-kubernetes``, ``python3-requests`` and ``node-configurable-http-proxy``.

For each mode, ``stock`` (no glue) and ``glue`` (``hubcredits_hub.install(c)``), each
with JupyterHub's default ``slow_spawn_timeout`` (10 s) and as Z2JH sets it (0:
``stock-z2jh``, ``glue-z2jh``), it
starts a JupyterHub on 127.0.0.1 with DummyAuthenticator and ``e2e_spawner.PodSpawner``
(creates KubeSpawner-shaped pods with the ``kubernetes`` client), makes the denied user
start a server on the four paths a person or a script uses, and checks the exact text
they get back:

1. browser "Start": ``GET /hub/spawn/<user>`` (the denial comes back within 1 s);
2. the progress stream ``/hub/api/users/<user>/server/progress`` (spawn-pending page);
3. a reload of ``/hub/spawn-pending/<user>``;
4. the REST API ``POST /hub/api/users/<user>/server``.

It also checks that a non-credits API error (a pod in a namespace that does not
exist: 404) looks the same with and without the glue, and that with the glue the
hub log holds none of the API tokens put in the pods' manifests (without it, it
does: KubeSpawner logs ``Failed for <manifest>``). With ``PRICED_USER`` (a user the
operator admits) it also checks that the first progress message is the price.

Environment:
  KUBECONFIG      required
  HUB_NAMESPACE   namespace of the user pods (default: default)
  DENIED_USER     a JupyterHub user the operator denies (default: hubcredits-e2e-nobody,
                  who has no CreditAccount)
  EXPECT_DENIAL   optional: the exact sentence the operator must answer for DENIED_USER
  PRICED_USER     optional: a user with credits (the test starts and stops their server)
  OTHER_DENIED_USER  optional: a user whose pod another webhook denies (must stay untouched)
  E2E_EXTRA_LABELS  optional JSON object of extra labels for the test pods (e.g. the labels
                  the operator's webhook selects on)
  E2E_SPAWNER     spawner class (default e2e_spawner.PodSpawner); "kubespawner.KubeSpawner"
                  runs a real KubeSpawner if it is importable (PYTHONPATH)
  E2E_MODES       default "stock glue stock-z2jh glue-z2jh"
  E2E_KEEP        set to keep the work directory (hub logs, configs)

Prints ``PASS``/``FAIL`` per check and the observed texts, then ``N passed, M failed``;
exits 1 if any check failed.
"""

import html
import html.parser
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = os.path.abspath(os.path.join(HERE, "..", "..", "charts", "hubcredits", "files"))
sys.path.insert(0, HERE)

WEBHOOK = "pods.hubcredits.io"
DENIED_MARK = f'admission webhook "{WEBHOOK}" denied the request: '
DEFAULT_SPAWNER = "e2e_spawner.PodSpawner"


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)
        return ok

    def equal(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")


def observed(label, text):
    print(f"     {label}: {text!r}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(" ".join(data.split()))


def page_text(response):
    """The page decoded as a browser does: JupyterHub sends no charset in Content-Type
    (requests would guess ISO-8859-1) but declares <meta charset="utf-8">."""
    return response.content.decode("utf-8", errors="replace")


def visible_text(page):
    """The text of an HTML page as a person reads it (no scripts, blanks collapsed)."""
    parser = _Text()
    parser.feed(page)
    return html.unescape(" | ".join(parser.parts))


def probe_denial(namespace, user):
    """Create the user's pod directly: returns the operator's sentence (the oracle)."""
    from kubernetes.client.rest import ApiException

    import e2e_spawner

    env = {"JUPYTERHUB_API_TOKEN": "probe-" + secrets.token_hex(8), "JUPYTERHUB_USER": user}
    pod = e2e_spawner.pod_manifest(user, env, namespace)
    api = e2e_spawner.core_api()
    try:
        api.create_namespaced_pod(namespace, pod)
    except ApiException as e:
        message = json.loads(e.body).get("message", "")
        if DENIED_MARK not in message:
            raise SystemExit(f"precondition: {user}'s pod was refused, but not by {WEBHOOK}: {e}")
        return message.split(DENIED_MARK, 1)[1].strip()
    api.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
    raise SystemExit(
        f"precondition: {WEBHOOK} admitted {user}'s pod; set DENIED_USER to a "
        "user the operator denies"
    )


class Hub:
    """A JupyterHub 3 process with its own proxy, database and log."""

    def __init__(self, workdir, mode, namespace, missing_namespace):
        self.dir = os.path.join(workdir, mode)
        os.makedirs(self.dir)
        self.mode = mode
        self.glue = mode.split("-")[0] == "glue"
        # Z2JH sets slow_spawn_timeout to 0: start requests return before the denial
        self.z2jh = mode.endswith("-z2jh")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.log_path = os.path.join(self.dir, "hub.log")
        self.tokens_path = os.path.join(self.dir, "tokens.txt")
        self.errors_path = os.path.join(self.dir, "api-errors.jsonl")
        self.proxy_pid = os.path.join(self.dir, "proxy.pid")
        self.env = dict(
            os.environ,
            NODE_PATH=os.environ.get("NODE_PATH", "/usr/share/nodejs"),
            PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]).rstrip(":"),
            HUB_NAMESPACE=namespace,
            E2E_MISSING_NAMESPACE=missing_namespace,
            E2E_TOKENS_FILE=self.tokens_path,
            E2E_ERRORS_FILE=self.errors_path,
        )
        self.proc = None
        self.spawner = os.environ.get("E2E_SPAWNER", DEFAULT_SPAWNER)

    def config(self):
        glue = (
            f"import sys\nsys.path.insert(0, {FILES!r})\n"
            "import hubcredits_hub\nhubcredits_hub.install(c)\n"
            if self.glue
            else ""
        )
        z2jh = 'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}\n' if self.z2jh else ""
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
c.JupyterHub.spawner_class = {self.spawner!r}
c.Spawner.start_timeout = 20
c.JupyterHub.services = [{{"name": "e2e", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "e2e", "scopes": ["admin:users", "admin:servers"], "services": ["e2e"]}}
]
{z2jh}{self.kubespawner_config() if self.spawner != DEFAULT_SPAWNER else ""}{glue}"""

    def kubespawner_config(self):
        """Settings for a real KubeSpawner (E2E_SPAWNER=kubespawner.KubeSpawner)."""
        return """\
import os
c.KubeSpawner.namespace = os.environ["HUB_NAMESPACE"]
c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"


def _record_tokens(spawner, pod):
    with open(os.environ["E2E_TOKENS_FILE"], "a") as f:
        for container in pod.spec.containers:
            for var in container.env or []:
                if var.name == "JUPYTERHUB_API_TOKEN":
                    f.write(var.value + "\\n")
    return pod


def _missing_namespace(spawner):
    if spawner.user.name.startswith("missing-ns"):
        spawner.namespace = os.environ["E2E_MISSING_NAMESPACE"]


c.KubeSpawner.modify_pod_hook = _record_tokens
c.Spawner.pre_spawn_hook = _missing_namespace
"""

    def __enter__(self):
        path = os.path.join(self.dir, "jupyterhub_config.py")
        with open(path, "w") as f:
            f.write(self.config())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", path],
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"jupyterhub exited ({self.proc.returncode}); see {self.log_path}:\n"
                    + self.log()[-3000:]
                )
            try:
                if requests.get(self.url + "/hub/api", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit(f"jupyterhub did not answer on {self.url} in 60 s; see {self.log_path}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # the proxy the hub started, if the hub did not stop it
            with open(self.proxy_pid) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def api_errors(self):
        """Status messages of the pod creates that failed, oldest first."""
        messages = []
        try:
            with open(self.errors_path) as f:
                for line in f:
                    try:
                        messages.append(json.loads(json.loads(line)["body"])["message"])
                    except (KeyError, TypeError, ValueError):
                        messages.append("")
        except OSError:
            pass
        return messages

    def denials(self):
        """Sentences of our webhook's denials, oldest first."""
        return [m.split(DENIED_MARK, 1)[1].strip() for m in self.api_errors() if DENIED_MARK in m]

    def expected(self, oracle):
        """What the user must see for the latest attempt (see :class:`Expected`)."""
        errors = self.api_errors()
        if errors and DENIED_MARK in errors[-1]:
            return Expected(exact=errors[-1].split(DENIED_MARK, 1)[1].strip())
        return Expected(oracle=oracle)

    def tokens(self):
        try:
            with open(self.tokens_path) as f:
                return [t for t in f.read().split() if t]
        except FileNotFoundError:
            return []

    def stop_server(self, user, namespace=None, timeout=90):
        """Stop ``user``'s server and wait until its pod is gone.

        JupyterHub 3 refuses to stop a pending spawn (400), and pods never run in a
        cluster without kubelets, so this waits for the spawn to time out
        (``start_timeout``), after which the hub stops the spawner (deletes the pod).
        """
        from kubernetes.client.rest import ApiException

        import e2e_spawner

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = self.rest("DELETE", user)
            if status in (202, 204):
                break
            status, model = self.rest_user(user)
            if status == 200 and not model.get("pending") and not model.get("servers"):
                break
            time.sleep(2)
        namespace = namespace or self.env["HUB_NAMESPACE"]
        while time.monotonic() < deadline:
            try:
                e2e_spawner.core_api().read_namespaced_pod(f"jupyter-{user}", namespace)
            except ApiException as e:
                if e.status == 404:
                    return True
                raise
            time.sleep(1)
        return False

    def rest_user(self, user):
        r = requests.get(
            f"{self.url}/hub/api/users/{user}",
            headers={"Authorization": f"token {self.token}"},
            timeout=30,
        )
        return r.status_code, r.json()

    # -- the four paths ---------------------------------------------------------------

    def login(self, user):
        session = requests.Session()
        r = session.post(
            f"{self.url}/hub/login?next=/hub/home",
            data={"username": user, "password": "e2e"},
            allow_redirects=False,
            timeout=30,
        )
        if r.status_code != 302:
            raise SystemExit(f"login as {user} failed: {r.status_code} {r.text[:300]}")
        return session

    def browser_start(self, session, user):
        r = session.get(f"{self.url}/hub/spawn/{user}", allow_redirects=False, timeout=60)
        return r.status_code, visible_text(page_text(r)), r.headers.get("Location")

    def progress(self, session, user, max_events=20, timeout=30):
        events = []
        r = session.get(
            f"{self.url}/hub/api/users/{user}/server/progress",
            headers={"Referer": f"{self.url}/hub/spawn-pending/{user}"},
            stream=True,
            timeout=timeout,
        )
        if r.status_code != 200:
            return r.status_code, [{"message": r.text}]
        deadline = time.monotonic() + timeout
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line.split(":", 1)[1]))
                if events[-1].get("failed") or events[-1].get("ready"):
                    break
                if len(events) >= max_events:
                    break
            if time.monotonic() > deadline:
                break
        r.close()
        return 200, events

    def reload_pending(self, session, user):
        r = session.get(f"{self.url}/hub/spawn-pending/{user}", allow_redirects=False, timeout=30)
        return r.status_code, visible_text(page_text(r))

    def rest(self, method, user, timeout=60):
        r = requests.request(
            method,
            f"{self.url}/hub/api/users/{user}/server",
            headers={"Authorization": f"token {self.token}"},
            json={} if method == "POST" else None,
            timeout=timeout,
        )
        try:
            body = r.json()
        except ValueError:
            body = r.text
        return r.status_code, body


class Expected:
    """The sentence a user must be shown for one spawn attempt.

    Exact when the spawner recorded the API server's answer to that very attempt
    (``E2E_ERRORS_FILE``); otherwise the probe's sentence with every number and duration a
    wildcard, since balances and the countdown to the next grant ("next +5 in 2m54s")
    move between attempts.
    """

    def __init__(self, exact=None, oracle=None):
        self.text = exact or oracle
        if exact:
            self.pattern = re.escape(exact)
        else:  # numbers and Go durations (4, 2m54s, 40s) become wildcards
            number = r"\d[\dhms.]*"
            self.pattern = number.join(re.escape(part) for part in re.split(number, oracle))

    def equals(self, got, prefix=""):
        return isinstance(got, str) and re.fullmatch(re.escape(prefix) + self.pattern, got)

    def within(self, text, prefix=""):
        return re.search(re.escape(prefix) + self.pattern, text) is not None

    def __repr__(self):
        return repr(self.text)


def denial_paths(hub, user, oracle, checks):
    m, glue = hub.mode, hub.glue
    session = hub.login(user)

    status, text, location = hub.browser_start(session, user)
    want = hub.expected(oracle)
    observed(f"{m} browser start {status}", location or text[:600])
    if hub.z2jh:
        checks.equal(
            f"{m}: browser start goes to the pending page",
            (status, location),
            (302, f"/hub/spawn-pending/{user}"),
        )
    elif glue:
        checks.equal(f"{m}: browser start is a 403", status, 403)
        checks.check(
            f"{m}: browser start page shows the sentence",
            want.within(text, "403 : Forbidden | "),
            f"{text[:600]!r} lacks {want!r}",
        )
    else:
        checks.equal(f"{m}: browser start is a 500", status, 500)
        checks.check(
            f"{m}: browser start page hides the sentence",
            "Unhandled error starting server" in text and not want.within(text),
            text[:600],
        )

    status, events = hub.progress(session, user)
    want = hub.expected(oracle)
    last = events[-1] if events else {}
    observed(f"{m} progress stream", last)
    checks.equal(f"{m}: progress stream answers", status, 200)
    checks.check(f"{m}: progress stream ends failed", last.get("failed") is True, str(last))
    message = last.get("message", "")
    if glue:
        checks.check(
            f"{m}: progress stream message is 'Spawn failed: <sentence>'",
            want.equals(message, "Spawn failed: "),
            f"got {message!r}, want 'Spawn failed: ' + {want!r}",
        )
        checks.check(f"{m}: no html_message", "html_message" not in last, str(last))
    else:
        checks.check(
            f"{m}: progress stream shows the raw ApiException",
            message.startswith("Spawn failed: (403)")
            and "HTTP response body" in message
            and "denied the request: " in message,
            message,
        )

    status, text = hub.reload_pending(session, user)
    observed(f"{m} spawn-pending reload {status}", text[:600])
    checks.check(f"{m}: reload says the spawn failed", "Spawn failed" in text, text[:600])
    if glue:
        checks.check(
            f"{m}: reload shows the sentence", want.within(text), f"{text[:600]!r} lacks {want!r}"
        )
        checks.check(
            f"{m}: reload shows no API noise",
            "HTTP response" not in text and "ApiException" not in text,
            text[:600],
        )
    else:
        checks.check(f"{m}: reload hides the sentence", not want.within(text), text[:600])

    status, body = hub.rest("POST", user)
    want = hub.expected(oracle)
    observed(f"{m} REST start {status}", body)
    if hub.z2jh:
        checks.equal(f"{m}: REST start is accepted (202), the denial follows", status, 202)
    elif glue:
        checks.check(
            f"{m}: REST start is 403 {{status: 403, message: <sentence>}}",
            status == 403
            and isinstance(body, dict)
            and sorted(body) == ["message", "status"]
            and body["status"] == 403
            and want.equals(body["message"]),
            f"got {status} {body!r}, want 403 and {want!r}",
        )
    else:
        checks.equal(f"{m}: REST start", (status, body), (500, {"status": 500, "message": "error"}))

    # JupyterHub 3.0 has a window between the failed start (no longer
    # pending) and its future being done, where progress answers 400 "is
    # not starting"; the spawn-pending page's stream then retries, as here.
    for _ in range(20):
        status, events = hub.progress(session, user)
        message = (events[-1] if events else {}).get("message", "")
        if not (status == 400 and "is not starting" in message):
            break
        observed(f"{m} progress after REST start: {status}, retrying", message[:200])
        time.sleep(0.5)
    want = hub.expected(oracle)
    if glue:
        checks.check(
            f"{m}: progress after REST start",
            want.equals(message, "Spawn failed: "),
            f"got {message!r}, want 'Spawn failed: ' + {want!r}",
        )


def other_error(hub, checks):
    """A 404 that is not ours must look the same with and without the glue."""
    m = hub.mode
    user = "missing-ns-e2e"
    session = hub.login(user)
    status, body = hub.rest("POST", user)
    observed(f"{m} REST start, pod in a missing namespace {status}", body)
    checks.equal(
        f"{m}: other API error via REST is untouched",
        status if hub.z2jh else (status, body),
        202 if hub.z2jh else (500, {"status": 500, "message": "error"}),
    )
    status, events = hub.progress(session, user)
    message = (events[-1] if events else {}).get("message", "")
    observed(f"{m} progress, pod in a missing namespace", message[:300])
    checks.check(
        f"{m}: other API error in the progress stream is untouched",
        message.startswith("Spawn failed: (404)") and "HTTP response body" in message,
        message[:300],
    )


def other_webhook(hub, user, checks):
    """A denial by some other webhook must look the same with and without the glue."""
    m = hub.mode
    session = hub.login(user)
    status, body = hub.rest("POST", user)
    observed(f"{m} REST start, denied by another webhook {status}", body)
    checks.equal(
        f"{m}: other webhook's denial via REST is untouched",
        status if hub.z2jh else (status, body),
        202 if hub.z2jh else (500, {"status": 500, "message": "error"}),
    )
    status, events = hub.progress(session, user)
    message = (events[-1] if events else {}).get("message", "")
    observed(f"{m} progress, denied by another webhook", message[-300:])
    checks.check(
        f"{m}: other webhook's denial in the progress stream is untouched",
        message.startswith("Spawn failed: (403)")
        and "HTTP response body" in message
        and WEBHOOK not in message,
        message[-300:],
    )


def price(hub, user, checks):
    m = hub.mode
    session = hub.login(user)
    status, body = hub.rest("POST", user)
    checks.check(f"{m}: priced user's spawn is accepted", status in (201, 202), f"{status} {body}")
    try:
        _, events = hub.progress(session, user, max_events=2, timeout=20)
        messages = [e.get("message", "") for e in events]
        observed(f"{m} progress for {user}", messages)
        checks.check(
            f"{m}: progress starts with 'Server requested'",
            messages[:1] == ["Server requested"],
            str(messages),
        )
        first = messages[1] if len(messages) > 1 else ""
        if hub.glue:
            checks.check(
                f"{m}: first spawner progress message is the price",
                first.startswith("This server costs "),
                first,
            )
        else:
            checks.check(
                f"{m}: stock progress shows the price as a raw event",
                "[Normal] This server costs " in " ".join(messages),
                str(messages),
            )
    finally:
        checks.check(
            f"{m}: priced user's pod is gone after the spawn",
            hub.stop_server(user),
            "pod still there",
        )


def log_checks(hub, user, oracle, checks):
    m = hub.mode
    log, tokens = hub.log(), hub.tokens()
    checks.check(f"{m}: pod manifests carried API tokens", len(tokens) >= 2, str(len(tokens)))
    leaked = [t for t in tokens if t in log]
    if hub.glue:
        checks.equal(f"{m}: hub log holds no API token", len(leaked), 0)
        prefix = f"Failed for jupyter-{user}: denied by {WEBHOOK} (pod manifest not logged): "
        denials = hub.denials()
        checks.check(
            f"{m}: hub log says who was denied, without the manifest",
            all(prefix + d in log for d in denials)
            if denials
            else Expected(oracle=oracle).within(log, prefix),
            f"no line {prefix!r} + one of {denials or [oracle]!r}",
        )
    else:
        checks.check(
            f"{m}: stock hub log leaks the API token (KubeSpawner 'Failed for')",
            len(leaked) > 0,
            "no token found",
        )


def run(checks):
    if not os.environ.get("KUBECONFIG"):
        raise SystemExit("KUBECONFIG must point at the API server running the hubcredits operator")
    namespace = os.environ.get("HUB_NAMESPACE", "default")
    user = os.environ.get("DENIED_USER", "hubcredits-e2e-nobody")
    priced = os.environ.get("PRICED_USER", "")
    other = os.environ.get("OTHER_DENIED_USER", "")
    modes = os.environ.get("E2E_MODES", "stock glue stock-z2jh glue-z2jh").split()
    missing_namespace = "hubcredits-e2e-missing-" + secrets.token_hex(4)

    sentence = probe_denial(namespace, user)
    observed(f"{WEBHOOK} answers for {user}", sentence)
    if os.environ.get("EXPECT_DENIAL"):
        checks.equal("operator's sentence", sentence, os.environ["EXPECT_DENIAL"])

    workdir = tempfile.mkdtemp(prefix="hubcredits-real-hub-")
    try:
        for mode in modes:
            print(f"--- JupyterHub with {mode} settings", flush=True)
            with Hub(workdir, mode, namespace, missing_namespace) as hub:
                denial_paths(hub, user, sentence, checks)
                other_error(hub, checks)
                if other:
                    other_webhook(hub, other, checks)
                if priced:
                    price(hub, priced, checks)
            log_checks(hub, user, sentence, checks)
    finally:
        if os.environ.get("E2E_KEEP") or checks.failed:
            print(f"work directory kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main():
    checks = Checks()
    try:
        run(checks)
    except SystemExit as e:  # a precondition or a hub that would not start
        if not isinstance(e.code, str):
            raise
        checks.check("setup", False, e.code)
    except Exception as e:  # e.g. the API server or the hub went away mid-test
        checks.check("run", False, f"{type(e).__name__}: {e}")
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
