"""Hub-side glue for hubcredits: what a JupyterHub user sees when credits stop a spawn.

The hubcredits admission webhook (``pods.hubcredits.io``) refuses to create a user's
pod when the user cannot pay for it. Without this module KubeSpawner turns that
refusal into a raw ``ApiException``: the user sees a dump of HTTP headers and JSON
in the progress stream, a bare "Spawn failed" after a reload, a 500 page when they
press Start, the hub logs the whole pod manifest (with the server's API token), and
the denial counts towards ``consecutive_failure_limit``. With it:

- a denial by ``pods.hubcredits.io`` becomes a ``tornado.web.HTTPError`` (403)
  whose ``jupyterhub_message`` is just the webhook's sentence, e.g.
  ``Not enough credits to start this server: it costs 10 credits every 10m, and
  account "alice" has 4 (next +5 in 3m).`` On JupyterHub 6 it is a
  ``jupyterhub.spawner.SpawnException`` (403, reason ``credits``), which the hub
  does not count as a failure. Denials by other webhooks and every other API error
  are re-raised untouched;
- a logging filter keeps API tokens (``JUPYTERHUB_API_TOKEN``, ``JPY_API_TOKEN``)
  and, for a credits denial, the pod manifest out of the hub log;
- the first message of the spawn progress stream is the price, read from the
  annotations the webhook pinned on the pod as soon as it exists, e.g. ``This server
  costs 10 credits / 10 min, paid from account alice.`` (else the ``CreditsReserved``
  event's message);
- the hub's home and spawn pages show the user's accounts (balance, cap, next grant,
  what the running servers cost, how long that lasts), every page says why a server
  was stopped for credits and warns when credits run low, from a background cache of
  CreditAccounts (one list + watch, :class:`CreditAccountCache`; needs the chart's
  ``hubReadAccess`` Role), rendered through JupyterHub's templates (``TEMPLATES``);
- each ``profile_list`` option shows its price, from a dry-run create of the pod it
  would make (:func:`profile_price`); an option the user cannot afford says so;
- ``GET /hub/api/credits[/<user>]`` returns the same as JSON (``read:users`` scope).

Use it from ``jupyterhub_config.py`` (or Z2JH ``hub.extraConfig``)::

    import hubcredits_hub
    hubcredits_hub.install(c)

``install`` wraps whatever ``c.JupyterHub.spawner_class`` is set to (KubeSpawner if
unset). Alternatives: ``c.JupyterHub.spawner_class = "hubcredits_hub.CreditsKubeSpawner"``,
or ``credits_spawner_class(MySpawner)`` for a spawner of your own. When this file is
dropped into Z2JH's ``/usr/local/etc/jupyterhub/jupyterhub_config.d/`` it is executed
as configuration and calls ``install(c)`` by itself.

Only public Spawner API is overridden: ``Spawner.start`` and ``Spawner.progress``
(plus ``__init__``). KubeSpawner internals this module relies on, read against
KubeSpawner 2.0.1, 3.0.2, 4.3.0, 5.0.0, 6.2.0 and 7.1.0 (all the same here):

- ``_make_create_pod_request`` re-raises every ``ApiException`` but 409 from the pod
  create, after ``self.log.exception("Failed for %s", pod.to_str())``; the exception
  reaches ``start()``'s future unchanged (``exponential_backoff`` only retries falsy
  results). 2.x uses the synchronous ``kubernetes`` client
  (``kubernetes.client.exceptions.ApiException``, ``body`` is ``str``); 3.x-7.x use
  ``kubernetes_asyncio`` (same class shape, ``body`` is ``bytes``). Both are
  recognised by shape (``status`` and ``body``), so neither client is imported here.
- ``progress()`` yields one dict per Kubernetes event of the pod, with the event
  under ``raw_event``; the ``events`` property lists the pod's events of this spawn.

This file has no dependency beyond JupyterHub and tornado, and must stay importable
without KubeSpawner (its tests run without it).
"""

import asyncio
import base64
import collections
import datetime
import html
import http.client
import inspect
import json
import logging
import os
import re
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

from tornado import web

__all__ = [
    "WEBHOOK_NAME",
    "CreditsDenied",
    "CreditsSpawnerMixin",
    "TokenScrubFilter",
    "credits_spawner_class",
    "denial_sentence",
    "install",
    "install_log_filter",
    "CreditAccountCache",
    "CreditsView",
]

#: Name of the hubcredits pod admission webhook; any denial it signs is ours.
WEBHOOK_NAME = "pods.hubcredits.io"
#: Type of the Status cause in which the webhook gives a denial's reason
#: (api/v1alpha1 DenialReasonCause).
DENIAL_REASON_CAUSE = "hubcredits.io/denial-reason"

#: Reason of the Kubernetes Event the operator writes on a pod it admitted.
RESERVED_EVENT_REASON = "CreditsReserved"

#: Annotations the webhook pins on an admitted pod (api/v1alpha1/labels.go).
ANNOTATION_ACCOUNT = "hubcredits.io/account"
ANNOTATION_PROJECT = "hubcredits.io/project"
ANNOTATION_VALUE = "hubcredits.io/billing-value"
ANNOTATION_INTERVAL = "hubcredits.io/billing-interval"

#: Metrics/log label of a credits denial on JupyterHub 6 (``SpawnException.reason``).
DENIAL_REASON = "credits"

#: Environment variables whose values are API tokens and must never be logged.
TOKEN_ENV_NAMES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")

_DENIED_RE = re.compile(
    r'admission webhook "' + re.escape(WEBHOOK_NAME) + r'" denied the request: (?P<sentence>.*)',
    re.DOTALL,
)

_FALLBACK_SENTENCE = "The hub's credit system did not allow this server to start."


# --------------------------------------------------------------------------------------
# Recognising a denial


def _text(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return None


def _status_message(body):
    """Return the ``message`` of a Kubernetes Status body, or the body as text."""
    text = _text(body)
    if not text:
        return None
    try:
        status = json.loads(text)
    except ValueError:
        return text
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return status["message"]
    return text


def denial_sentence(exc):
    """Return our webhook's sentence if ``exc`` is a pod create refused by it, else None.

    ``exc`` is an ``ApiException`` of either Kubernetes client (or anything shaped
    like one: an int ``status`` and a Status JSON ``body``), possibly the ``__cause__``
    of another exception. Only client errors (4xx) that name our webhook count: a 500
    "failed calling webhook" (webhook down) is not a denial and is left alone.
    """
    seen = 0
    while exc is not None and seen < 5:
        seen += 1
        status = getattr(exc, "status", None)
        if isinstance(status, int) and 400 <= status < 500:
            message = _status_message(getattr(exc, "body", None))
            if message:
                match = _DENIED_RE.search(message)
                if match:
                    return match.group("sentence").strip() or _FALLBACK_SENTENCE
        exc = exc.__cause__
    return None


def denial_reason(exc):
    """Return the reason our webhook gave for a denial (``NotEnoughCredits``, ``NotMember``,
    ...: the cause of type :data:`DENIAL_REASON_CAUSE` in the Status details), or None."""
    seen = 0
    while exc is not None and seen < 5:
        seen += 1
        try:
            status = json.loads(_text(getattr(exc, "body", None)) or "null")
        except ValueError:
            status = None
        causes = ((status or {}).get("details") or {}).get("causes") or [] \
            if isinstance(status, dict) else []
        for cause in causes:
            # metav1.StatusCause: its Type is "reason" in JSON, the reason "message"
            if isinstance(cause, dict) and cause.get("reason") == DENIAL_REASON_CAUSE:
                return cause.get("message") or None
        exc = exc.__cause__
    return None


# --------------------------------------------------------------------------------------
# The exception the hub shows


def _make_denial_class(spawn_exception=None):
    """Build the exception class for a denial.

    JupyterHub 6 has ``SpawnException``: a 403 one is a "failure", not an "error",
    so it is not counted towards ``consecutive_failure_limit`` and logged without a
    traceback. Before 6, a plain ``HTTPError`` is what every page and API handler
    shows cleanly, provided its ``reason`` stays empty: ``User.spawn`` sets
    ``e.reason = 'error'`` on any failure, and a reason of ``'error'`` turns the
    message into "Failed to start your server on the last attempt" (JupyterHub 3
    error page) and the HTTP status line into "403 error". So ``reason`` is a
    read-only property of our own that is always None.
    """
    if spawn_exception is not None:

        class CreditsDenied(spawn_exception):
            """A spawn refused by the hubcredits webhook (JupyterHub >= 6)."""

            def __init__(self, sentence):
                super().__init__(sentence, reason=DENIAL_REASON, status_code=403)
                self.sentence = sentence
                self.jupyterhub_message = sentence

        CreditsDenied.__qualname__ = "CreditsDenied"
        return CreditsDenied

    class CreditsDenied(web.HTTPError):
        """A spawn refused by the hubcredits webhook (JupyterHub < 6)."""

        def __init__(self, sentence):
            super().__init__(403, "%s", sentence)
            self.sentence = sentence
            self.jupyterhub_message = sentence

        @property
        def reason(self):
            return None

        @reason.setter
        def reason(self, value):
            pass

    CreditsDenied.__qualname__ = "CreditsDenied"
    return CreditsDenied


try:
    from jupyterhub.spawner import SpawnException as _SpawnException
except ImportError:  # JupyterHub < 6
    _SpawnException = None

CreditsDenied = _make_denial_class(_SpawnException)


# --------------------------------------------------------------------------------------
# Keeping tokens out of the hub log

_TOKEN_NAMES_RE = "|".join(TOKEN_ENV_NAMES)
_QUOTED = r"""(?:'[^'\n]*'|"[^"\n]*")"""
# A V1EnvVar as Python repr/pprint or JSON: 'name': 'JUPYTERHUB_API_TOKEN', 'value': '...'.
# pprint may split a long value into ('abc' 'def'), hence the optional parentheses.
_ENV_DICT_RE = re.compile(
    r"""(?P<head>['"]name['"]\s*:\s*['"](?:%s)['"]\s*,\s*['"]value['"]\s*:\s*)"""
    r"""(?:\(\s*(?:%s\s*)+\)|%s)""" % (_TOKEN_NAMES_RE, _QUOTED, _QUOTED)
)
# Environment-style NAME=value, NAME: value, "NAME": "value".
_ENV_ASSIGN_RE = re.compile(
    r"""(?P<head>\b(?:%s)['"]?\s*[=:]\s*['"]?)(?!\[redacted)[^\s'",}\])]+""" % _TOKEN_NAMES_RE
)
# Candidate token values: maximal runs between quotes, blanks and punctuation.
_WORD_RE = re.compile(r"""[^\s'"=:,;{}()\[\]<>]{8,}""")
_POD_NAME_RE = re.compile(
    r"""['"]metadata['"]\s*:\s*\{.*?['"]name['"]\s*:\s*['"]([^'"]+)['"]""", re.DOTALL
)
REDACTED = "[redacted by hubcredits]"


class TokenScrubFilter(logging.Filter):
    """Log filter that keeps API tokens and denied pod manifests out of the hub log.

    - KubeSpawner's ``log.exception("Failed for %s", pod.to_str())`` for a pod our
      webhook denied becomes one line naming the pod and the denial, without the
      manifest (which carries the server's token) and without the traceback.
      For any other failure the manifest is kept, with token values redacted.
    - In every other record and traceback, values of ``JUPYTERHUB_API_TOKEN`` /
      ``JPY_API_TOKEN`` and tokens remembered by :meth:`remember` are redacted.

    The filter never drops a record and never raises.
    """

    def __init__(self, name="", max_tokens=4096):
        super().__init__(name)
        self._tokens = collections.OrderedDict()
        self._max_tokens = max_tokens
        self._lock = threading.Lock()

    def remember(self, token):
        """Redact this exact value wherever it appears (a server's API token)."""
        if not token or len(token) < 8:
            return
        with self._lock:
            self._tokens[token] = None
            self._tokens.move_to_end(token)
            while len(self._tokens) > self._max_tokens:
                self._tokens.popitem(last=False)

    def scrub(self, text):
        """Return ``text`` with token values replaced by a marker."""
        if not text:
            return text
        if any(name in text for name in TOKEN_ENV_NAMES):
            text = _ENV_DICT_RE.sub(lambda m: m.group("head") + repr(REDACTED), text)
            text = _ENV_ASSIGN_RE.sub(lambda m: m.group("head") + REDACTED, text)
        if self._tokens:
            text = _WORD_RE.sub(self._redact_remembered, text)
        return text

    def _redact_remembered(self, match):
        word = match.group(0)
        return REDACTED if word in self._tokens else word

    def filter(self, record):
        try:
            self._filter(record)
        except Exception:  # a log filter must never break logging
            pass
        return True

    def _filter(self, record):
        if record.msg == "Failed for %s" and self._denied_manifest(record):
            return
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        if record.exc_info and not record.exc_text:
            formatted = logging.Formatter().formatException(record.exc_info)
            scrubbed = self.scrub(formatted)
            if scrubbed != formatted:
                record.exc_text = scrubbed

    @staticmethod
    def _denied_manifest(record):
        exc = record.exc_info[1] if record.exc_info else None
        sentence = denial_sentence(exc)
        if sentence is None:
            return False
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        manifest = _text(args[0]) if args else None
        match = _POD_NAME_RE.search(manifest or "")
        pod = match.group(1) if match else "pod"
        record.msg = "Failed for %s: denied by %s (pod manifest not logged): %s"
        record.args = (pod, WEBHOOK_NAME, sentence)
        record.exc_info = None
        record.exc_text = None
        return True


#: The one filter this module installs everywhere (it also holds remembered tokens).
LOG_FILTER = TokenScrubFilter()

#: Loggers ``install`` puts the filter on: the hub application's log (which spawners
#: use through traitlets) and KubeSpawner's module loggers.
HUB_LOGGERS = ("JupyterHub", "jupyterhub", "kubespawner", "traitlets")


def install_log_filter(*loggers):
    """Attach :data:`LOG_FILTER` to loggers (names, Loggers or LoggerAdapters).

    A logger's filters only see records logged on that very logger, so the filter is
    also attached to the handlers those loggers already have. Idempotent.
    """
    for item in loggers or HUB_LOGGERS:
        logger = logging.getLogger(item) if isinstance(item, str) else item
        logger = getattr(logger, "logger", logger)  # LoggerAdapter
        if not isinstance(logger, logging.Logger):
            continue
        for target in [logger] + list(logger.handlers):
            if LOG_FILTER not in target.filters:
                target.addFilter(LOG_FILTER)
    return LOG_FILTER


# --------------------------------------------------------------------------------------
# Reading CreditAccounts: a small Kubernetes client (standard library only)

#: Where the CreditAccount API lives.
CA_GROUP_VERSION = "hubcredits.io/v1alpha1"
CA_PLURAL = "creditaccounts"
LP_PLURAL = "ledgerpages"

_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

log = logging.getLogger("JupyterHub")


class KubeError(Exception):
    """An API call that did not succeed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class KubeClient:
    """Just enough of a Kubernetes client for a list, a watch and a dry-run create.

    In a pod it uses the ServiceAccount (the token file is re-read, so a rotated token
    is picked up); elsewhere the current context of ``$KUBECONFIG``. Tokens and
    request bodies never reach a log line or an exception message.
    """

    def __init__(self, host, context, token=None, token_file=None, namespace="default"):
        url = urllib.parse.urlsplit(host)
        self.scheme = url.scheme or "https"
        self.netloc = url.netloc
        self.prefix = url.path.rstrip("/")
        self.context = context
        self._token = token
        self._token_file = token_file
        self.namespace = namespace

    @classmethod
    def from_environment(cls):
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if host and os.path.exists(os.path.join(_SA_DIR, "token")):
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if ":" in host:
                host = f"[{host}]"
            context = ssl.create_default_context(cafile=os.path.join(_SA_DIR, "ca.crt"))
            try:
                with open(os.path.join(_SA_DIR, "namespace")) as f:
                    namespace = f.read().strip()
            except OSError:
                namespace = "default"
            return cls(
                f"https://{host}:{port}",
                context,
                token_file=os.path.join(_SA_DIR, "token"),
                namespace=namespace,
            )
        return cls.from_kubeconfig(
            os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            or os.path.expanduser("~/.kube/config")
        )

    @classmethod
    def from_kubeconfig(cls, path):
        import yaml  # PyYAML: in Z2JH's hub image and Debian's JupyterHub

        with open(path) as f:
            config = yaml.safe_load(f)

        def named(kind, name):
            for item in config.get(kind) or ():
                if item.get("name") == name:
                    return item.get(kind[:-1]) or {}
            raise KubeError(0, f"kubeconfig {path}: no {kind[:-1]} {name!r}")

        ctx = named("contexts", config.get("current-context"))
        cluster = named("clusters", ctx.get("cluster"))
        user = named("users", ctx.get("user")) if ctx.get("user") else {}
        context = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            context.load_verify_locations(cadata=ca)
        elif cluster.get("certificate-authority"):
            context.load_verify_locations(cafile=cluster["certificate-authority"])
        if user.get("client-certificate-data") or user.get("client-certificate"):
            with tempfile.TemporaryDirectory() as tmp:  # ssl needs files; kept in memory after
                cert, key = user.get("client-certificate"), user.get("client-key")
                if user.get("client-certificate-data"):
                    cert = os.path.join(tmp, "c")
                    with open(os.open(cert, os.O_CREAT | os.O_WRONLY, 0o600), "wb") as f:
                        f.write(base64.b64decode(user["client-certificate-data"]))
                if user.get("client-key-data"):
                    key = os.path.join(tmp, "k")
                    with open(os.open(key, os.O_CREAT | os.O_WRONLY, 0o600), "wb") as f:
                        f.write(base64.b64decode(user["client-key-data"]))
                context.load_cert_chain(cert, key)
        return cls(
            cluster["server"],
            context,
            token=user.get("token"),
            token_file=user.get("tokenFile"),
            namespace=ctx.get("namespace") or "default",
        )

    def _headers(self, body):
        headers = {"Accept": "application/json", "User-Agent": "hubcredits-hub"}
        token = self._token
        if self._token_file:
            try:
                with open(self._token_file) as f:
                    token = f.read().strip()
            except OSError:
                pass
        if token:
            headers["Authorization"] = "Bearer " + token
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def open(self, method, path, query=None, body=None, timeout=10.0):
        """Send a request; returns (connection, response). The caller closes both."""
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.netloc, timeout=timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(self.netloc, timeout=timeout)
        target = self.prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, target, body=data, headers=self._headers(body))
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise KubeError(0, f"{method} {path}: {type(e).__name__}: {e}") from None

    def call(self, method, path, query=None, body=None, timeout=10.0):
        """One request; returns the decoded JSON, or raises KubeError with the Status message."""
        conn, response = self.open(method, path, query, body, timeout)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise KubeError(0, f"{method} {path}: {type(e).__name__}: {e}") from None
        finally:
            conn.close()
        try:
            decoded = json.loads(raw or b"{}")
        except ValueError:
            decoded = {}
        if response.status >= 300:
            message = decoded.get("message") if isinstance(decoded, dict) else None
            raise KubeError(response.status, message or f"{method} {path}: {response.status}")
        return decoded


# --------------------------------------------------------------------------------------
# The cache of CreditAccounts


def _parse_time(value):
    """RFC 3339 (as Kubernetes writes it) to epoch seconds, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        value = value.replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_GO_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(value):
    """A Go/metav1 duration ("10m0s", "1h30m", "90s") in seconds, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    parts = _GO_DURATION_RE.findall(value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _int(value, default=0):
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class ServerCharge:
    """One running (or stopping) server billed to an account, as the cache keeps it."""

    __slots__ = ("user", "server", "pod", "wallet", "value", "interval", "started",
                 "paid_through", "stopping")

    def __init__(self, entry):
        self.user = str(entry.get("user") or "")
        self.server = str(entry.get("serverName") or "")
        self.pod = str(entry.get("pod") or "")
        self.wallet = str(entry.get("wallet") or "")
        self.value = _int(entry.get("billingValue"))
        self.interval = parse_go_duration(entry.get("billingInterval")) or 0
        self.started = _parse_time(entry.get("startedAt"))
        self.paid_through = _parse_time(entry.get("paidThrough"))
        self.stopping = entry.get("stopRequestedAt") is not None

    @property
    def running(self):
        return self.started is not None and not self.stopping


class Account:
    """What the hub needs of one CreditAccount (no managedFields, no ledger history)."""

    __slots__ = ("name", "users", "groups", "cap", "balance", "grant_amount", "grant_interval",
                 "granted_through", "project", "servers", "low", "low_message",
                 "exhausted_at", "exhausted_message", "stops", "opened", "pages")

    def __init__(self, obj):
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        status = obj.get("status") or {}
        self.name = str(meta.get("name") or "")
        self.users = tuple(u for u in spec.get("users") or () if isinstance(u, str))
        self.groups = tuple(g for g in spec.get("groups") or () if isinstance(g, str))
        self.cap = _int(spec.get("cap"))
        self.balance = _int(status.get("balance"))
        self.opened = status.get("openedAt") is not None
        grant = spec.get("grant") or {}
        self.grant_amount = _int(grant.get("amount"))
        self.grant_interval = parse_go_duration(grant.get("interval")) or 0
        self.granted_through = _parse_time(status.get("grantedThrough"))
        self.project = str(spec.get("project") or "")
        # LedgerPages (<name>-1 .. <name>-<pages>) hold the entries of a course pool's
        # servers beyond the 64 of status.servers (LedgerPageCache).
        self.pages = _int(status.get("pages"))
        self.servers = tuple(
            ServerCharge(e)
            for e in status.get("servers") or ()
            if isinstance(e, dict) and e.get("endedAt") is None
        )
        self.low = False
        self.low_message = ""
        self.exhausted_at = None
        self.exhausted_message = ""
        for cond in status.get("conditions") or ():
            if not isinstance(cond, dict) or cond.get("status") != "True":
                continue
            if cond.get("type") == "Low":
                self.low, self.low_message = True, str(cond.get("message") or "")
            elif cond.get("type") == "Exhausted" and cond.get("reason") == "ServerStopped":
                self.exhausted_at = _parse_time(cond.get("lastTransitionTime"))
                self.exhausted_message = str(cond.get("message") or "")
        # (time, pod, message) of the stops still in the ledger, newest last
        self.stops = tuple(
            (_parse_time(e.get("time")), str(e.get("subject") or ""), str(e.get("message") or ""))
            for e in status.get("ledger") or ()
            if isinstance(e, dict) and e.get("kind") == "Stop"
        )

    def with_servers(self, extra):
        """A copy of the account that also holds the server entries ``extra``."""
        copy = Account.__new__(Account)
        for slot in Account.__slots__:
            setattr(copy, slot, getattr(self, slot))
        copy.servers = self.servers + tuple(extra)
        return copy

    def next_grant(self, now):
        """(epoch, amount) of the next grant that adds credits, or None."""
        if self.grant_amount <= 0 or self.grant_interval <= 0 or self.granted_through is None:
            return None
        if self.balance >= self.cap:
            return None
        due = self.granted_through + self.grant_interval
        if due <= now:  # the operator has not written it yet
            missed = int((now - due) // self.grant_interval) + 1
            due += missed * self.grant_interval
        return due, min(self.grant_amount, self.cap - self.balance)

    def burn_rate(self):
        """Credits per second the running servers cost."""
        return sum(s.value / s.interval for s in self.servers if s.running and s.interval > 0)


class CreditAccountCache:
    """CreditAccounts of one namespace, kept by one list + watch in a daemon thread.

    Page renders and API calls read it and never wait for the API server. ``state``
    is ``"starting"`` until the first list, ``"synced"`` while the watch runs, and
    ``"unavailable"`` when the API server cannot be reached or refuses (the Role is
    missing); one log line says why (one more when it recovers). While the API server
    is merely unreachable (a restart), what is known keeps being shown, marked with its
    age, for up to ``stale_grace`` seconds after the last word from it; a refusal
    (401/403/404) hides it at once.
    """

    #: What the cache lists and watches (``_path``), as its log lines name it.
    KIND = "CreditAccounts"

    def __init__(self, namespace=None, client_factory=KubeClient.from_environment,
                 page_size=500, watch_timeout=240, max_backoff=30.0, stale_grace=300.0,
                 pages=True):
        # The LedgerPages of the namespace, in a second watch: a course pool's servers
        # beyond 64 are on them (shown when readable, else the status' alone).
        self.pages = (
            LedgerPageCache(namespace, client_factory, page_size, watch_timeout, max_backoff,
                            stale_grace, pages=False)
            if pages else None
        )
        self.namespace = namespace
        self._client_factory = client_factory
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._max_backoff = max_backoff
        self._accounts = {}
        self._by_user = {}
        self._by_group = {}
        self._pools = {}  # pool name -> wallets naming it (to find a pool's members)
        self.state = "starting"
        self.reason = ""
        self.resource_version = ""
        self.synced_at = None
        self.last_ok = None  # time.time() of the last answer from the API server
        self.stale_grace = stale_grace
        self._stale_ok = False
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # writers only; readers use immutable values

    # -- reading (any thread, never blocks) ------------------------------------------

    @property
    def available(self):
        if self.state == "synced":
            return True
        return (
            self.state == "unavailable"
            and self._stale_ok
            and self.last_ok is not None
            and time.time() - self.last_ok < self.stale_grace
        )

    @property
    def stale_since(self):
        """When the shown data was last confirmed, if it is not live; else None."""
        return None if self.state == "synced" else self.last_ok

    def get(self, name):
        return self._paged(self._accounts.get(name))

    def _paged(self, account):
        """``account`` with the servers on its LedgerPages, when they can be read."""
        if account is None or not account.pages or self.pages is None or not self.pages.available:
            return account
        return account.with_servers(self.pages.servers_of(account.name))

    def __len__(self):
        return len(self._accounts)

    def accounts_for(self, user, groups=()):
        """The accounts ``user`` can spend from: those that list them, then their pools.

        Without one that lists them by name, those that list one of their JupyterHub
        ``groups`` (``spec.groups``: a course pool), as the webhook chooses.
        """
        names = self._by_user.get(user, ())
        if not names:
            names = sorted({n for g in groups for n in self._by_group.get(g, ())})
        found, seen = [], set()
        for name in names:
            account = self._accounts.get(name)
            for item in (account, self._accounts.get(account.project) if account else None):
                if item is not None and item.name not in seen:
                    seen.add(item.name)
                    found.append(self._paged(item))
        return found

    # -- writing (the cache thread, or tests) ----------------------------------------

    def replace_all(self, objects, resource_version=""):
        """Replace the whole cache with ``objects`` (CreditAccounts, or :class:`Account`)."""
        accounts = {}
        for obj in objects:
            account = obj if isinstance(obj, Account) else Account(obj)
            if account.name:
                accounts[account.name] = account
        by_user, by_group = {}, {}
        for account in accounts.values():
            for user in account.users:
                by_user.setdefault(user, []).append(account.name)
            for group in account.groups:
                by_group.setdefault(group, []).append(account.name)
        with self._lock:
            self._accounts = accounts
            self._by_user = {u: tuple(sorted(n)) for u, n in by_user.items()}
            self._by_group = {g: tuple(sorted(n)) for g, n in by_group.items()}
            self.resource_version = resource_version

    def apply(self, kind, obj):
        """Apply one watch event (ADDED, MODIFIED, DELETED)."""
        account = Account(obj)
        if not account.name:
            return
        with self._lock:
            old = self._accounts.get(account.name)
            if kind == "DELETED":
                self._accounts.pop(account.name, None)
                new_users, new_groups = (), ()
            else:
                self._accounts[account.name] = account
                new_users, new_groups = account.users, account.groups
            old_users, old_groups = (old.users, old.groups) if old is not None else ((), ())
            _reindex(self._by_user, account.name, old_users, new_users)
            _reindex(self._by_group, account.name, old_groups, new_groups)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv

    def _set_state(self, state, reason=""):
        if state == self.state and reason == self.reason:
            return
        was = self.state
        self.state, self.reason = state, reason
        if state == "synced" and was != "synced":
            log.info("hubcredits: watching %d %s in namespace %s",
                     len(self), self.KIND, self.namespace)
        elif state == "unavailable" and was != "unavailable":
            log.warning("hubcredits: no credits shown on hub pages: %s", reason)

    # -- the thread --------------------------------------------------------------------

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="hubcredits-" + self.KIND.lower(), daemon=True
            )
            self._thread.start()
        if self.pages is not None:
            self.pages.start()
        return self

    def stop(self):
        self._stop.set()
        if self.pages is not None:
            self.pages.stop()

    def _run(self):
        backoff = 0.5
        client = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self._client_factory()
                    if not self.namespace:
                        self.namespace = client.namespace
                    if self.pages is not None and not self.pages.namespace:
                        self.pages.namespace = self.namespace
                self._list(client)
                self._set_state("synced")
                backoff = 0.5
                while not self._stop.is_set() and self._watch(client):
                    pass
            except KubeError as e:
                self._stale_ok = e.status not in (401, 403, 404)
                self._set_state("unavailable", self._explain(e))
            except Exception as e:  # never let the thread die
                self._stale_ok = False
                self._set_state("unavailable", f"{type(e).__name__}: {e}")
                client = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _explain(self, e):
        if e.status == 403:
            return (f"the hub may not list CreditAccounts in namespace {self.namespace} "
                    "(enable the chart's hubReadAccess Role)")
        if e.status == 404:
            return "the CreditAccount API is not installed (hubcredits.io/v1alpha1)"
        return str(e)

    def _path(self):
        return f"/apis/{CA_GROUP_VERSION}/namespaces/{self.namespace}/{CA_PLURAL}"

    @staticmethod
    def _parse(obj):
        return Account(obj)

    def _list(self, client):
        # Page by page into Accounts: the raw objects (managedFields, ledgers) of one
        # page at a time are alive, never the whole namespace's.
        accounts, cont = [], None
        while True:
            query = {"limit": self._page_size}
            if cont:
                query["continue"] = cont
            page = client.call("GET", self._path(), query, timeout=30)
            accounts.extend(self._parse(obj) for obj in page.get("items") or ())
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            page = None
            if not cont:
                break
        self.replace_all(accounts, meta.get("resourceVersion", ""))
        self.synced_at = self.last_ok = time.time()

    def _watch(self, client):
        """Follow one watch; True to watch again from where it ended, False to relist."""
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": self._watch_timeout,
        }
        conn, response = client.open("GET", self._path(), query, timeout=self._watch_timeout + 30)
        try:
            if response.status != 200:
                response.read()
                if response.status == 410:
                    return False
                raise KubeError(response.status, f"watch: HTTP {response.status}")
            self.last_ok = time.time()
            self._set_state("synced")
            while not self._stop.is_set():
                line = response.readline()
                if not line:
                    return True
                self.last_ok = time.time()
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return False  # 410 Gone (resourceVersion too old) and the like: relist
                if kind == "BOOKMARK":
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    continue
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.apply(kind, obj)
            return False
        except (OSError, http.client.HTTPException) as e:
            raise KubeError(0, f"watch: {type(e).__name__}") from None
        finally:
            conn.close()

    def memory_bytes(self):
        """Rough size of what the cache holds (objects it owns, not shared strings)."""
        seen = set()

        def size(obj):
            if id(obj) in seen:
                return 0
            seen.add(id(obj))
            total = sys.getsizeof(obj)
            if isinstance(obj, dict):
                total += sum(size(k) + size(v) for k, v in obj.items())
            elif isinstance(obj, (tuple, list, set)):
                total += sum(size(v) for v in obj)
            elif hasattr(obj, "__slots__"):
                total += sum(size(getattr(obj, a, None)) for a in obj.__slots__)
            return total

        return sum(size(o) for o in self._owned())

    def _owned(self):
        return self._accounts, self._by_user, self._by_group


class _Page:
    """What the hub needs of one LedgerPage: its account and its servers still running."""

    __slots__ = ("name", "account", "servers")

    def __init__(self, obj):
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        status = obj.get("status") or {}
        self.name = str(meta.get("name") or "")
        self.account = str(spec.get("account") or "")
        self.servers = tuple(
            ServerCharge(e)
            for e in status.get("servers") or ()
            if isinstance(e, dict) and e.get("endedAt") is None
        )


class LedgerPageCache(CreditAccountCache):
    """The LedgerPages of one namespace, kept by one list + watch (as the accounts are).

    A page may lag its account by the one transaction the account committed and the
    page does not show yet (a reservation of the last second): good enough to show.
    """

    KIND = "LedgerPages"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pages = {}  # page name -> _Page
        self._by_account = {}  # account name -> {page name: _Page}

    def __len__(self):
        return len(self._pages)

    def servers_of(self, account):
        """The running (or stopping) servers on the pages of ``account``."""
        pages = self._by_account.get(account) or {}
        return tuple(s for name in sorted(pages) for s in pages[name].servers)

    def replace_all(self, objects, resource_version=""):
        pages = {}
        for obj in objects:
            page = obj if isinstance(obj, _Page) else _Page(obj)
            if page.name and page.account:
                pages[page.name] = page
        by_account = {}
        for page in pages.values():
            by_account.setdefault(page.account, {})[page.name] = page
        with self._lock:
            self._pages, self._by_account = pages, by_account
            self.resource_version = resource_version

    def apply(self, kind, obj):
        page = _Page(obj)
        if not page.name or not page.account:
            return
        with self._lock:
            by_account = dict(self._by_account)
            pages = dict(by_account.get(page.account) or {})
            if kind == "DELETED":
                self._pages.pop(page.name, None)
                pages.pop(page.name, None)
            else:
                self._pages[page.name] = page
                pages[page.name] = page
            if pages:
                by_account[page.account] = pages
            else:
                by_account.pop(page.account, None)
            self._by_account = by_account
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv

    def _set_state(self, state, reason=""):
        # The account cache tells of an API server that cannot be reached; this one
        # only of a refusal of the pages themselves (the Role lacks them).
        if state == self.state and reason == self.reason:
            return
        was = self.state
        self.state, self.reason = state, reason
        if state == "unavailable" and was != "unavailable" and not self._stale_ok:
            log.warning("hubcredits: %s", reason)

    def _explain(self, e):
        if e.status == 403:
            return (f"the hub may not list LedgerPages in namespace {self.namespace} "
                    "(the chart's hubReadAccess Role grants it): the servers of a course "
                    "pool beyond 64 are not shown")
        if e.status == 404:
            return "the LedgerPage API is not installed (hubcredits.io/v1alpha1)"
        return str(e)

    def _path(self):
        return f"/apis/{CA_GROUP_VERSION}/namespaces/{self.namespace}/{LP_PLURAL}"

    @staticmethod
    def _parse(obj):
        return _Page(obj)

    def _owned(self):
        return self._pages, self._by_account


def _reindex(index, name, old_keys, new_keys):
    """Move account ``name`` in ``index`` (key -> sorted names) from old_keys to new_keys."""
    if old_keys == new_keys:
        return
    for key in set(old_keys) | set(new_keys):
        names = set(index.get(key, ()))
        names.discard(name)
        if key in new_keys:
            names.add(name)
        if names:
            index[key] = tuple(sorted(names))
        else:
            index.pop(key, None)


# --------------------------------------------------------------------------------------
# What a user is shown: the credits box, the stop notice, the low warning, the REST body


def format_duration(seconds):
    """A duration as a person says it: "45 s", "10 min", "1 h 5 min", "2 d 3 h"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = (seconds + 59) // 60 if seconds < 3600 else seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def price_text(value, interval):
    """ "10 credits / 10 min", as the profile list and the box show a price."""
    if not value:
        return "free"
    unit = "credit" if value == 1 else "credits"
    return f"{value} {unit} / {format_duration(interval)}"


def _iso(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _clock(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%H:%M UTC")


def account_view(account, user, now, admin=False, pool=None):
    """One account as the page and the REST API show it (plain JSON types).

    ``pool``: the project pool that pays first for this wallet's servers, if known;
    how long the balance lasts then counts the pool's credits too.
    """
    mine = [s for s in account.servers if s.user == user or admin]
    running = [s for s in account.servers if s.running]
    rate = account.burn_rate()
    grant = account.next_grant(now)
    grant_rate = (
        account.grant_amount / account.grant_interval
        if account.grant_amount > 0 and account.grant_interval > 0
        else 0.0
    )
    view = {
        "name": account.name,
        "kind": "wallet",
        "balance": account.balance,
        "cap": account.cap,
        "project": account.project or None,
        "grant": None,
        "running_servers": len(running),
        "cost_per_hour": round(rate * 3600, 3),
        "lasts_seconds": None,
        "low": account.low,
        "low_message": account.low_message or None,
        "servers": [
            {
                "user": s.user,
                "server": s.server,
                "pod": s.pod,
                "wallet": s.wallet,
                "billing_value": s.value,
                "billing_interval_seconds": s.interval,
                "price": price_text(s.value, s.interval),
                "running": s.running,
                "started_at": _iso(s.started),
                "paid_through": _iso(s.paid_through),
                "stop_requested": s.stopping,
            }
            for s in mine
        ],
    }
    if account.grant_amount > 0 and account.grant_interval > 0:
        view["grant"] = {
            "amount": account.grant_amount,
            "interval_seconds": account.grant_interval,
            "next_at": _iso(grant[0]) if grant else None,
            "next_amount": grant[1] if grant else 0,
            "text": (
                f"+{grant[1]} in {format_duration(grant[0] - now)}"
                if grant
                else f"+{account.grant_amount} / {format_duration(account.grant_interval)} (at cap)"
            ),
        }
    if rate > grant_rate:
        funds = account.balance + (max(pool.balance, 0) if pool is not None else 0)
        view["lasts_seconds"] = int(max(funds, 0) / (rate - grant_rate))
    # what the page prints
    view["cost_text"] = (
        " + ".join(price_text(s.value, s.interval) for s in running) if running else ""
    )
    if rate <= 0:
        view["lasts_text"] = ""
    elif view["lasts_seconds"] is None:
        view["lasts_text"] = "grants keep up with the running servers"
    else:
        view["lasts_text"] = f"lasts about {format_duration(view['lasts_seconds'])}"
    return view


def _stop_notice(accounts, user, pods, since):
    """The newest stop for credits of one of ``user``'s servers after ``since``, or None.

    ``pods``: names of the user's pods the hub knows. A stop counts as the user's when
    its ledger entry names one of those pods, when the stopping server entry is the
    user's, or when the account is the user's alone.
    """
    best = None
    for account in accounts:
        if account.exhausted_at is None:
            continue
        candidates = [(t, m) for t, pod, m in account.stops if pod in pods and t is not None]
        stopping = [s for s in account.servers if s.stopping and s.user == user]
        if not candidates and (stopping or account.users == (user,)):
            candidates = [(account.exhausted_at, account.exhausted_message)]
        for at, message in candidates:
            if since is not None and at <= since:
                continue
            if best is None or at > best[0]:
                best = (at, message)
    if best is None:
        return None
    at, message = best
    detail = message[len("Stopped: "):] if message.startswith("Stopped: ") else message
    detail = detail.rstrip(".") + "."
    return {
        "at": _iso(at),
        "message": message,
        "text": f"Your server was stopped at {_clock(at)}: {detail}",
    }


def user_credits(cache, user, now=None, pods=(), started_since=None, admin=False, groups=()):
    """Everything shown to ``user`` (a name, in ``groups``): JSON-ready; ``available``
    False = show nothing."""
    now = time.time() if now is None else now
    if cache is None or not cache.available:
        return {"user": user, "available": False, "as_of": None, "as_of_text": "",
                "accounts": [], "stop": None, "low": []}
    accounts = cache.accounts_for(user, groups)
    pools = {a.project for a in accounts if a.project}
    views = []
    for account in accounts:
        pool = cache.get(account.project) if account.project else None
        view = account_view(account, user, now, admin=admin, pool=pool)
        if account.name in pools or (len(account.users) > 1 and not account.project):
            view["kind"] = "project"
        views.append(view)
    low = [
        {"account": v["name"], "text": _low_text(v)}
        for v in views
        if v["low"] and v["running_servers"] > 0
    ]
    stale = getattr(cache, "stale_since", None)
    return {
        "user": user,
        "available": True,
        "as_of": _iso(stale) if stale else None,
        "as_of_text": f"as of {_clock(stale)}, the hub cannot reach the cluster" if stale else "",
        "accounts": views,
        "stop": _stop_notice(accounts, user, set(pods), started_since),
        "low": low,
    }


def _low_text(view):
    text = f"Credits are running low: account {view['name']} has {view['balance']}"
    if view["cost_text"]:
        text += f", your running servers cost {view['cost_text']}"
    if view["lasts_seconds"] is not None:
        text += f", about {format_duration(view['lasts_seconds'])} left"
    return text + "."


def _pod_meta(pod):
    if pod is None:
        return None, None
    if isinstance(pod, dict):
        meta = pod.get("metadata") or {}
        return meta.get("annotations") or {}, meta.get("deletionTimestamp")
    meta = getattr(pod, "metadata", None)
    return (getattr(meta, "annotations", None) or {}), getattr(meta, "deletion_timestamp", None)


def pinned_price_text(pod):
    """The price line from a pod's pinned annotations, or None (no pod, not priced yet).

    ``This server costs 10 credits / 10 min, paid from account alice.``
    """
    annotations, deleting = _pod_meta(pod)
    if not annotations or deleting:
        return None
    value = annotations.get(ANNOTATION_VALUE)
    interval = parse_go_duration(annotations.get(ANNOTATION_INTERVAL))
    account = annotations.get(ANNOTATION_ACCOUNT)
    if value is None or interval is None or not account:
        return None
    try:
        value = int(value)
    except ValueError:
        return None
    if value == 0:
        return f"This server is free, billed to account {account}."
    project = annotations.get(ANNOTATION_PROJECT)
    payer = f"project {project}, then account {account}" if project else f"account {account}"
    return f"This server costs {price_text(value, interval)}, paid from {payer}."


# --------------------------------------------------------------------------------------
# Hub pages (JupyterHub templates) and the REST API

#: Templates put first on ``c.JupyterHub.template_paths``. Each extends JupyterHub's
#: own page (reachable under the ``templates/`` prefix) and only adds to its blocks.
TEMPLATES = {
    "page.html": """{% extends "templates/page.html" %}
{% block announcement %}
{{ super() }}
{%- if hubcredits is defined and user %}{% set hc = hubcredits.for_user(user) %}
{%- if hc.stop %}
<div class="container">
  <div class="alert alert-danger hubcredits-stop" role="alert">{{ hc.stop.text }}</div>
</div>
{%- endif %}
{%- for warning in hc.low %}
<div class="container">
  <div class="alert alert-warning hubcredits-low" role="alert">{{ warning.text }}</div>
</div>
{%- endfor %}
{%- endif %}
{% endblock announcement %}
""",
    "home.html": """{% extends "templates/home.html" %}
{% block main %}
{{ super() }}
{% include "hubcredits_box.html" %}
{% endblock main %}
""",
    "spawn.html": """{% extends "templates/spawn.html" %}
{% block main %}
{% include "hubcredits_box.html" %}
{{ super() }}
{% endblock main %}
""",
    "hubcredits_box.html": """
{%- if hubcredits is defined and user %}
{%- set hc = hubcredits.for_user(for_user if (for_user is defined and for_user) else user) %}
{%- if hc.available and hc.accounts %}
<div class="container hubcredits mt-3" id="hubcredits" style="margin-top: 1rem">
  <div class="row justify-content-center"><div class="col-md-10">
  <h2 class="h5">Credits{% if hc.as_of_text %}
    <small class="text-muted hubcredits-stale">({{ hc.as_of_text }})</small>{% endif %}</h2>
  <table class="table table-sm hubcredits-accounts">
    <thead>
      <tr><th>Account</th><th>Balance</th><th>Next grant</th><th>Running servers</th>
      <th>Lasts</th></tr>
    </thead>
    <tbody>
    {%- for a in hc.accounts %}
    <tr class="hubcredits-account" data-account="{{ a.name }}" data-balance="{{ a.balance }}">
      <td>{{ a.name }}
        {%- if a.kind == "project" %} <span class="text-muted">(project)</span>{% endif %}</td>
      <td><span class="hubcredits-balance">{{ a.balance }}</span> / {{ a.cap }}</td>
      <td>{{ a.grant.text if a.grant else "none" }}</td>
      <td>{{ a.cost_text if a.cost_text else "none" }}</td>
      <td>{{ a.lasts_text }}</td>
    </tr>
    {%- endfor %}
    </tbody>
  </table>
  </div></div>
</div>
{%- endif %}
{%- endif %}
""",
}


def _utc_epoch(value):
    if value is None:
        return None
    if value.tzinfo is None:  # JupyterHub's database times are naive UTC
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class CreditsView:
    """``hubcredits`` in the templates: ``hubcredits.for_user(user)`` never raises.

    Not callable on purpose: JupyterHub >= 4 calls callable ``template_vars`` with
    the user, JupyterHub 3 does not; an object with a method works on both.
    """

    def __init__(self, cache):
        self.cache = cache
        self._failures = 0

    def __deepcopy__(self, memo):
        # traitlets deep-copies config values; this one holds the live cache
        return self

    def for_user(self, user, admin=False):
        name = getattr(user, "name", None) or ""
        try:
            pods, since = self._user_state(user)
            groups = [getattr(g, "name", None) for g in getattr(user, "groups", None) or ()]
            return user_credits(self.cache, name, pods=pods, started_since=since, admin=admin,
                                groups=[g for g in groups if isinstance(g, str)])
        except Exception as e:  # a page must render whatever the cache holds
            if self._failures == 0:
                log.warning("hubcredits: credits not shown: %s: %s", type(e).__name__, e)
            self._failures += 1
            return {"user": name, "available": False, "as_of": None, "as_of_text": "",
                    "accounts": [], "stop": None, "low": []}

    @staticmethod
    def _user_state(user):
        pods, since = set(), None
        spawners = getattr(user, "spawners", None) or {}
        for spawner in list(spawners.values()):
            pod = getattr(spawner, "pod_name", None)
            if isinstance(pod, str):
                pods.add(pod)
            orm = getattr(spawner, "orm_spawner", None)
            started = _utc_epoch(getattr(orm, "started", None)) if orm is not None else None
            if started is not None and (since is None or started > since):
                since = started
        return pods, since


#: The cache and view ``install`` sets up (one per hub process).
CACHE = None
VIEW = CreditsView(None)


def _api_handler_class():
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import needs_scope

    class CreditsAPIHandler(APIHandler):
        """``GET /hub/api/credits[/<user>]``: the accounts a user can spend from.

        Needs ``read:users`` on that user (JupyterHub's own check, ``needs_scope``):
        every user has it on themselves (the ``self`` scope); admins and services with
        ``read:users`` may ask for anyone. Anyone else gets a 403.
        """

        @needs_scope("read:users")
        def _check_scope(self, user_name):
            return True

        def _may_read(self, name):
            try:
                return self._check_scope(name)
            except web.HTTPError as e:
                if e.status_code in (403, 404):  # 404: "filtered out", same thing here
                    return False
                raise

        async def get(self, user_name=None):
            current = self.current_user
            if current is None:
                raise web.HTTPError(403, "Missing or invalid credentials.")
            name = user_name or self.get_argument("user", None)
            if not name:
                if getattr(current, "kind", "user") != "user":
                    raise web.HTTPError(400, "Name a user: /hub/api/credits/<user>.")
                name = current.name
            if not self._may_read(name):
                raise web.HTTPError(403, f"Not allowed to read the credits of user {name}.")
            user = self.find_user(name)
            if user is None:
                raise web.HTTPError(404, f"No such user: {name}.")
            body = VIEW.for_user(user, admin=name != getattr(current, "name", None))
            if not body["available"]:
                reason = CACHE.reason if CACHE is not None else "not installed"
                self.set_status(503)
                body = dict(body, message=f"Credits are not available right now ({reason}).")
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(body, sort_keys=True))

    return CreditsAPIHandler


def _template_dir():
    directory = os.environ.get("HUBCREDITS_TEMPLATE_DIR") or os.path.join(
        tempfile.gettempdir(), f"hubcredits-templates-{os.getuid()}"
    )
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, text in TEMPLATES.items():
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return directory


def _namespace(c):
    """Where CreditAccounts are: $HUBCREDITS_NAMESPACE, KubeSpawner's namespace, or the pod's."""
    if os.environ.get("HUBCREDITS_NAMESPACE"):
        return os.environ["HUBCREDITS_NAMESPACE"]
    configured = c.KubeSpawner.get("namespace") if "KubeSpawner" in c else None
    if isinstance(configured, str) and configured and "{" not in configured:
        return configured
    return None  # the client's: the ServiceAccount's namespace, or the kubeconfig context's


def install_pages(c, namespace=None, start=True):
    """Credits on the hub pages and ``GET /hub/api/credits``; returns the cache."""
    global CACHE
    if CACHE is None:
        CACHE = CreditAccountCache(namespace or _namespace(c))
        VIEW.cache = CACHE
    directory = _template_dir()
    paths = list(c.JupyterHub.get("template_paths") or [])
    if directory not in paths:
        c.JupyterHub.template_paths = [directory] + paths
    template_vars = dict(c.JupyterHub.get("template_vars") or {})
    template_vars["hubcredits"] = VIEW
    c.JupyterHub.template_vars = template_vars
    handlers = list(c.JupyterHub.get("extra_handlers") or [])
    if not any(h[0] == r"/api/credits" for h in handlers):
        handler = _api_handler_class()
        handlers += [(r"/api/credits", handler), (r"/api/credits/([^/]+)", handler)]
        c.JupyterHub.extra_handlers = handlers
    if start:
        CACHE.start()
    return CACHE


# --------------------------------------------------------------------------------------
# Prices of the profile list: a dry-run create of the pod each option would make

#: Seconds a profile's price stays cached, per user, server and profile.
PROFILE_PRICE_TTL = 60.0
#: Seconds one dry run may take (the webhook itself answers within 2 s).
PROFILE_PRICE_TIMEOUT = 5.0
#: The denial reason (api/v1alpha1 DenialReasonCause) that marks an option "not enough
#: credits"; other denials (not a member of the pool, no account...) "not available".
NOT_ENOUGH_REASON = "NotEnoughCredits"

_profile_prices = {}
_logged_once = set()


def _log_once(key, message, *args):
    if key not in _logged_once:
        _logged_once.add(key)
        log.warning(message, *args)


def _scratch_spawner(spawner, profile):
    """A throwaway spawner of the same class with ``profile`` selected, never started."""
    scratch = type(spawner)(
        user=spawner.user, hub=spawner.hub, config=spawner.config,
        name=getattr(spawner, "name", ""), orm_spawner=None,
    )
    scratch.user_options = {"profile": profile.get("slug")}
    return scratch


async def profile_price(spawner, profile, now=None):
    """What the option ``profile`` would cost ``spawner``'s user, from the real admission.

    KubeSpawner builds the pod the option would make (a scratch spawner with the
    profile's overrides: labels, resources, node selectors...), and the API server
    runs it through the admission webhooks as a dry run: ``pods.hubcredits.io`` prices
    it without reserving and pins the price in the answer's annotations, or denies it
    with its sentence when the user cannot afford it. Returns ``{"text", "affordable",
    "value", "interval"}`` or None (price unknown: one log line per profile).
    Cached for :data:`PROFILE_PRICE_TTL` seconds per user, server and profile.
    """
    now = time.monotonic() if now is None else now
    key = (spawner.user.name, getattr(spawner, "name", ""), profile.get("slug"))
    cached = _profile_prices.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    result = None
    try:
        scratch = _scratch_spawner(spawner, profile)
        await scratch.load_user_options()
        annotate_groups(scratch)
        pod = await scratch.get_pod_manifest()
        created = scratch.api.create_namespaced_pod(
            scratch.namespace, pod, dry_run="All", _request_timeout=PROFILE_PRICE_TIMEOUT
        )
        if inspect.isawaitable(created):
            created = await asyncio.wait_for(created, PROFILE_PRICE_TIMEOUT)
        annotations, _ = _pod_meta(created)
        value = annotations.get(ANNOTATION_VALUE)
        interval = parse_go_duration(annotations.get(ANNOTATION_INTERVAL))
        if value is not None and interval is not None:
            value = int(value)
            result = {"text": price_text(value, interval), "affordable": True,
                      "value": value, "interval": interval}
        else:
            _log_once(("price", key[2]), "hubcredits: profile %s is not priced by %s",
                      key[2], WEBHOOK_NAME)
    except Exception as e:
        sentence = denial_sentence(e)
        if sentence is not None:
            result = {"text": sentence, "affordable": False, "value": None, "interval": None,
                      "reason": denial_reason(e)}
        else:  # never the pod or the exception's body: they may hold a token
            status = getattr(e, "status", None)
            _log_once(("price", key[2]), "hubcredits: no price for profile %s: %s%s",
                      key[2], type(e).__name__, f" {status}" if status else "")
    _profile_prices[key] = (now + PROFILE_PRICE_TTL, result)
    if len(_profile_prices) > 10000:
        for stale in [k for k, v in _profile_prices.items() if v[0] <= now]:
            _profile_prices.pop(stale, None)
    return result


# --------------------------------------------------------------------------------------
# The spawner mixin


def _is_reserved_event(event):
    return (
        isinstance(event, dict)
        and event.get("reason") == RESERVED_EVENT_REASON
        and bool(event.get("message"))
    )


GROUPS_ANNOTATION = "hubcredits.io/groups"
# What the webhook accepts in it (billing.MaxGroups, billing.MaxGroupLength).
MAX_GROUPS = 256
MAX_GROUP_LENGTH = 255


def groups_annotation(user):
    """The user's JupyterHub group names as the webhook reads them: a JSON list.

    Sorted, without names the webhook would refuse (empty, longer than
    :data:`MAX_GROUP_LENGTH`), at most :data:`MAX_GROUPS` of them. A CreditAccount
    whose ``spec.groups`` lists one of them is open to the user (a course pool).
    """
    names = sorted({
        name for name in (getattr(g, "name", None) for g in getattr(user, "groups", None) or ())
        if isinstance(name, str) and 0 < len(name) <= MAX_GROUP_LENGTH
    })
    return json.dumps(names[:MAX_GROUPS], separators=(",", ":"))


def annotate_groups(spawner):
    """Put the user's groups on the pod ``spawner`` will make (``extra_annotations``).

    The webhook trusts the annotation as it trusts the username: from the hub
    (``--allowed-creators``). A spawner without ``extra_annotations`` (not a
    KubeSpawner) or without a user is left alone.
    """
    user = getattr(spawner, "user", None)
    if user is None or not hasattr(spawner, "extra_annotations"):
        return
    annotations = dict(spawner.extra_annotations or {})
    annotations[GROUPS_ANNOTATION] = groups_annotation(user)
    spawner.extra_annotations = annotations


class CreditsSpawnerMixin:
    """Mixin for a KubeSpawner (2.x-7.x) class; put it first in the bases.

    Overrides only public ``Spawner`` methods: ``start`` (puts the user's groups on
    the pod, see :func:`annotate_groups`, and translates our webhook's denial, see
    :func:`denial_sentence` / :class:`CreditsDenied`) and ``progress`` (announces the
    price first).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        install_log_filter(*HUB_LOGGERS)
        install_log_filter(self.log)

    async def start(self):
        LOG_FILTER.remember(getattr(self, "api_token", None))
        annotate_groups(self)
        try:
            result = super().start()
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            sentence = denial_sentence(exc)
            if sentence is None:
                raise
            self.log.warning(
                "Server %s not started: %s denied its pod: %s",
                getattr(self, "_log_name", "?"),
                WEBHOOK_NAME,
                sentence,
            )
            raise CreditsDenied(sentence) from exc

    async def progress(self):
        """KubeSpawner's progress, with the price first.

        The price comes from the annotations the webhook pinned on the admitted pod
        (``hubcredits.io/billing-value``, ``-interval``, ``hubcredits.io/account``), read
        from KubeSpawner's pod reflector as soon as the pod exists, so it is there even
        when the server is ready before the operator writes its ``CreditsReserved``
        event. Without pinned annotations (a free server, another spawner) that event's
        message is shown instead, once, without KubeSpawner's ``<time> [Normal]`` prefix.
        """
        announced = False
        price = await self._hubcredits_wait_for_price()
        if price is not None:
            announced = True
            yield {"progress": 1, "message": price}
        async for event in super().progress():
            raw = event.get("raw_event") if isinstance(event, dict) else None
            if raw is not None and not announced:
                reserved = raw if _is_reserved_event(raw) else self._hubcredits_reserved_event()
                if reserved is not None:
                    announced = True
                    yield {
                        "progress": event.get("progress", 0),
                        "message": reserved["message"],
                        "raw_event": reserved,
                    }
            if _is_reserved_event(raw):
                continue
            yield event

    #: How long ``progress`` waits for the pod before handing over to KubeSpawner.
    hubcredits_price_wait = 15.0

    async def _hubcredits_wait_for_price(self):
        # Until the pod shows up in KubeSpawner's reflector (it does as soon as the
        # create is admitted, with the webhook's annotations), or the start ends.
        if getattr(self, "pod_reflector", None) is None:
            return None
        deadline = time.monotonic() + self.hubcredits_price_wait
        while time.monotonic() < deadline:
            try:
                pod = self._hubcredits_pod()
                annotations, deleting = _pod_meta(pod)
                if pod is not None and not deleting:
                    return pinned_price_text(pod)
            except Exception:  # never break the progress stream
                return None
            future = getattr(self, "_start_future", None)
            if future is not None and future.done():
                return None
            await asyncio.sleep(0.05)
        return None

    def _hubcredits_pod(self):
        """This spawn's pod as KubeSpawner's reflector holds it (dict or client object)."""
        reflector = getattr(self, "pod_reflector", None)
        pods = getattr(reflector, "pods", None)
        if not pods:
            return None
        name, namespace = getattr(self, "pod_name", None), getattr(self, "namespace", None)
        return pods.get(f"{namespace}/{name}") or pods.get(name)

    # -- prices on the profile list ---------------------------------------------------

    async def get_options_form(self):
        """The spawner's options form; with a KubeSpawner ``profile_list``, each option
        shows its price, or that the user cannot afford it (see :func:`profile_price`)."""
        form = await super().get_options_form()
        try:
            return await self._hubcredits_priced_form(form)
        except Exception as e:  # the form without prices, never an error page
            _log_once("options-form", "hubcredits: no prices on the profile list: %s: %s",
                      type(e).__name__, e)
            return form

    async def _hubcredits_priced_form(self, form):
        render = getattr(self, "_render_options_form", None)
        profiles = getattr(self, "profile_list", None)
        if not form or not profiles or render is None:
            return form
        if callable(profiles):
            profiles = profiles(self)
            if inspect.isawaitable(profiles):
                profiles = await profiles
        if isinstance(profiles, dict):  # KubeSpawner 7 also takes {key: profile}
            profiles = self._sorted_dict_values(profiles)
        profiles = self._get_initialized_profile_list(profiles)
        prices = await asyncio.gather(
            *(profile_price(self, profile) for profile in profiles), return_exceptions=True
        )
        priced = []
        for profile, price in zip(profiles, prices):
            profile = dict(profile)
            if isinstance(price, dict):
                affordable = price["affordable"]
                if not affordable:
                    # The webhook's sentence says why; the marker names the reason only
                    # when the webhook gave it as the balance (a pool that does not list
                    # the user, say, is "not available", not "not enough credits").
                    marker = ("not enough credits" if price.get("reason") == NOT_ENOUGH_REASON
                              else "not available")
                    profile["display_name"] = f"{profile.get('display_name', '')} ({marker})"
                css = "text-muted" if affordable else "text-danger"
                profile["description"] = (
                    f'{profile.get("description") or ""}<br><span class="hubcredits-price '
                    f'{css}" data-affordable="{str(affordable).lower()}">'
                    f'{html.escape(price["text"])}</span>'
                )
            priced.append(profile)
        return render(priced)

    def _hubcredits_reserved_event(self):
        for event in getattr(self, "events", None) or ():
            if _is_reserved_event(event):
                return event
        return None


_classes = {}


def credits_spawner_class(base):
    """Return a subclass of spawner class ``base`` with :class:`CreditsSpawnerMixin`."""
    if issubclass(base, CreditsSpawnerMixin):
        return base
    if base not in _classes:
        _classes[base] = type(
            "Credits" + base.__name__,
            (CreditsSpawnerMixin, base),
            {"__module__": __name__, "__doc__": base.__doc__},
        )
    return _classes[base]


def _resolve_spawner_class(value):
    if inspect.isclass(value):
        return value
    name = str(value)
    if "." in name:
        module, _, attr = name.rpartition(".")
        return getattr(__import__(module, fromlist=[attr]), attr)
    from importlib.metadata import entry_points

    eps = entry_points()
    group = (
        eps.select(group="jupyterhub.spawners")
        if hasattr(eps, "select")
        else eps.get("jupyterhub.spawners", ())
    )
    for ep in group:
        if ep.name == name:
            return ep.load()
    raise ValueError(f"hubcredits_hub: cannot resolve spawner class {value!r}")


def install(c, base=None, pages=True, namespace=None):
    """Apply the glue to a JupyterHub config object ``c``; returns the spawner class.

    Wraps ``base``, or else ``c.JupyterHub.spawner_class``, or else KubeSpawner, and
    installs the log filter on the hub's loggers. With ``pages`` (the default) it also
    shows credits on the hub pages and serves ``GET /hub/api/credits``
    (:func:`install_pages`; CreditAccounts of ``namespace``). Safe to call more than once.
    """
    if base is None:
        base = c.JupyterHub.get("spawner_class") or "kubespawner.KubeSpawner"
    cls = credits_spawner_class(_resolve_spawner_class(base))
    c.JupyterHub.spawner_class = cls
    install_log_filter(*HUB_LOGGERS)
    if pages:
        install_pages(c, namespace=namespace)
    return cls


def __getattr__(name):
    # ``c.JupyterHub.spawner_class = "hubcredits_hub.CreditsKubeSpawner"`` without
    # importing KubeSpawner when this module is merely imported.
    if name == "CreditsKubeSpawner":
        from kubespawner import KubeSpawner

        return credits_spawner_class(KubeSpawner)
    raise AttributeError(name)


# Z2JH executes every *.py in jupyterhub_config.d with the configuration's globals,
# where ``c`` and ``get_config`` are defined; an import never sees them.
if "get_config" in globals() and "c" in globals():
    install(globals()["c"])
