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
- the first message of the spawn progress stream is the price, taken from the
  ``CreditsReserved`` event the operator writes on the admitted pod, e.g.
  ``This server costs 10 credits every 10m, paid from account alice (86 left).``

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

import collections
import inspect
import json
import logging
import re
import threading

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
]

#: Name of the hubcredits pod admission webhook; any denial it signs is ours.
WEBHOOK_NAME = "pods.hubcredits.io"

#: Reason of the Kubernetes Event the operator writes on a pod it admitted.
RESERVED_EVENT_REASON = "CreditsReserved"

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
# The spawner mixin


def _is_reserved_event(event):
    return (
        isinstance(event, dict)
        and event.get("reason") == RESERVED_EVENT_REASON
        and bool(event.get("message"))
    )


class CreditsSpawnerMixin:
    """Mixin for a KubeSpawner (2.x-7.x) class; put it first in the bases.

    Overrides only public ``Spawner`` methods: ``start`` (translates our webhook's
    denial, see :func:`denial_sentence` / :class:`CreditsDenied`) and ``progress``
    (announces the price first).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        install_log_filter(*HUB_LOGGERS)
        install_log_filter(self.log)

    async def start(self):
        LOG_FILTER.remember(getattr(self, "api_token", None))
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
        """KubeSpawner's progress, with the ``CreditsReserved`` event moved first.

        The operator writes that event when it admits the pod; its message is the
        price (``This server costs 10 credits every 10m, paid from account alice
        (86 left).``). It is shown once, verbatim, without KubeSpawner's
        ``<timestamp> [Normal]`` prefix, before any other event of the pod (events
        are sorted by timestamp, and the scheduler's sub-second ``eventTime`` can sort
        ahead of a same-second ``lastTimestamp``).
        """
        announced = False
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


def install(c, base=None):
    """Apply the glue to a JupyterHub config object ``c``; returns the spawner class.

    Wraps ``base``, or else ``c.JupyterHub.spawner_class``, or else KubeSpawner, and
    installs the log filter on the hub's loggers. Safe to call more than once.
    """
    if base is None:
        base = c.JupyterHub.get("spawner_class") or "kubespawner.KubeSpawner"
    cls = credits_spawner_class(_resolve_spawner_class(base))
    c.JupyterHub.spawner_class = cls
    install_log_filter(*HUB_LOGGERS)
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
