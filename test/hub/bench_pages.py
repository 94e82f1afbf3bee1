"""Benchmark: hub page render time with the glue and 10,000 CreditAccounts, and the cache's memory.

    KUBECONFIG=... /tmp/hub5/bin/python test/hub/bench_pages.py

Against the API server in ``KUBECONFIG`` (``make dev``; the operator may run), it fills the
namespace ``BENCH_NAMESPACE`` (default ``hubcredits-bench``) with ``BENCH_ACCOUNTS``
CreditAccounts (default 10000; one of them lists the benchmark's user), then runs the
same JupyterHub twice, without and with ``hubcredits_hub.install(c)``, and times
``GET /hub/home`` and ``GET /hub/spawn-pending``-free pages as a logged-in user
(``BENCH_REQUESTS`` each, default 500, after 50 warm-up requests). It reports p50/p99 per
page and hub, the difference of the p99s (the target: within 5 ms), the hub's resident
memory with and without the glue, and the cache's own size (tracemalloc of a cache
filled from the same list, and ``CreditAccountCache.memory_bytes``).

Exits 1 if a p99 differs by more than ``BENCH_MAX_P99_MS`` (default 5).
"""

import concurrent.futures
import gc
import json
import os
import re
import sys
import time
import tracemalloc


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import real_hub_credits as rhc  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

PAGES = ("/hub/home", "/hub/token")


def fill(cluster, count, user):
    """Create accounts bench-00000... (the first lists ``user``); skip those that exist."""
    existing = set()
    cont = None
    while True:
        page = cluster.custom.list_namespaced_custom_object(
            rhc.GROUP, rhc.VERSION, cluster.ns, "creditaccounts", limit=1000,
            **({"_continue": cont} if cont else {}))
        existing.update(i["metadata"]["name"] for i in page["items"])
        cont = page["metadata"].get("continue")
        if not cont:
            break

    def create(i):
        name = f"bench-{i:05d}"
        if name in existing:
            return
        body = {"apiVersion": f"{rhc.GROUP}/{rhc.VERSION}", "kind": "CreditAccount",
                "metadata": {"name": name, "namespace": cluster.ns},
                "spec": {"users": [user if i == 0 else f"bench-user-{i}"], "cap": 100,
                         "grant": {"amount": 5, "interval": "1h"}}}
        try:
            cluster.custom.create_namespaced_custom_object(
                rhc.GROUP, rhc.VERSION, cluster.ns, "creditaccounts", body)
        except ApiException as e:
            if e.status != 409:
                raise

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))
    return len(existing), time.monotonic() - started


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(hubs, user, requests_per_page):
    """Interleaved requests to both hubs (so both see the same machine), timed by the
    client and by the hub itself (its request log line: ``200 GET /hub/home (...) 9.27ms``)."""
    sessions = {name: hub.login(user) for name, hub in hubs.items()}
    client = {name: {path: [] for path in PAGES} for name in hubs}
    boxes = {}
    for i in range(50 + requests_per_page):
        order = list(hubs) if i % 2 else list(reversed(hubs))
        for path in PAGES:
            for name in order:
                t0 = time.perf_counter()
                r = sessions[name].get(hubs[name].url + path, timeout=30)
                took = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{name} {path}: {r.status_code}")
                if i >= 50:
                    client[name][path].append(took)
                boxes[(name, path)] = 'id="hubcredits"' in r.text
    results = {}
    for name, hub in hubs.items():
        log = hub.log()
        results[name] = {}
        for path in PAGES:
            served = [float(ms) for ms in re.findall(
                r"200 GET " + re.escape(path) + r" \(" + re.escape(user) + r"@[^)]*\) ([\d.]+)ms",
                log)][-requests_per_page:]
            results[name][path] = {
                "server_p50_ms": percentile(served, 50),
                "server_p99_ms": percentile(served, 99),
                "client_p50_ms": percentile(client[name][path], 50),
                "client_p99_ms": percentile(client[name][path], 99),
                "samples": len(served),
                "box": boxes[(name, path)],
            }
    return results


def percentile(samples, p):
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 2)


def cache_memory(cluster):
    """Bytes a cache filled from the namespace's list holds (tracemalloc and deep size)."""
    sys.path.insert(0, rhc.FILES)
    import hubcredits_hub as hh

    client = hh.KubeClient.from_kubeconfig(os.environ["KUBECONFIG"])
    cache = hh.CreditAccountCache(cluster.ns)
    items = []
    cont = None
    while True:
        query = {"limit": 500, **({"continue": cont} if cont else {})}
        page = client.call("GET", cache._path(), query)
        items.extend(page["items"])
        cont = page["metadata"].get("continue")
        if not cont:
            break
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    cache.replace_all(items)
    gc.collect()
    after = tracemalloc.take_snapshot()
    traced = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    raw = len(json.dumps(items))
    cache.state = "synced"
    return cache, {"accounts": len(cache), "tracemalloc_bytes": traced,
                   "deep_size_bytes": cache.memory_bytes(), "list_json_bytes": raw}


def render_bench(cache, user, renders):
    """What the glue adds to rendering a page, in process: JupyterHub's home.html and
    token.html rendered by JupyterHub's loader set-up without and with the glue's
    templates and the filled cache, interleaved, ``renders`` times each."""
    import hubcredits_hub as hh
    from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
    from jupyterhub.app import JupyterHub

    import test_credits_pages as tcp

    base = JupyterHub()._template_paths_default()[0]
    ours = hh._template_dir()

    def env(paths):
        loader = ChoiceLoader([PrefixLoader({"templates": FileSystemLoader([base])}, "/"),
                               FileSystemLoader(paths)])
        return Environment(loader=loader, autoescape=True)

    envs = {"stock": env([base]), "glue": env([ours, base])}
    ns = dict(base_url="/hub/", prefix="/", user=tcp.User(user), login_url="/hub/login",
              logout_url="/hub/logout", static_url=lambda *a, **k: "/static", version_hash="",
              services=[], parsed_scopes={}, expanded_scopes=set(), xsrf="x", xsrf_token="x",
              default_server=None, named_server_limit_per_user=0, spawner_options_form="",
              url="/hub/spawn", allow_named_servers=False, named_servers=[], api_tokens=[],
              oauth_clients=[], token_expires_in_options=[], token_expires_in_max_seconds=0,
              show_spawn_button=True, announcement=None, no_spawner_check=True,
              for_user=None, hubcredits=hh.CreditsView(cache))
    out = {}
    for page in ("home.html", "token.html"):
        templates = {name: e.get_template(page) for name, e in envs.items()}
        samples = {name: [] for name in envs}
        for i in range(200 + renders):
            for name in (("stock", "glue") if i % 2 else ("glue", "stock")):
                t0 = time.perf_counter()
                html = templates[name].render(**ns)
                if i >= 200:
                    samples[name].append((time.perf_counter() - t0) * 1000)
        out[page] = {name: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
                     for name, v in samples.items()}
        out[page]["box"] = 'id="hubcredits"' in html
    return out


def main():
    count = int(os.environ.get("BENCH_ACCOUNTS", "10000"))
    n = int(os.environ.get("BENCH_REQUESTS", "500"))
    limit = float(os.environ.get("BENCH_MAX_P99_MS", "5"))
    namespace = os.environ.get("BENCH_NAMESPACE", "hubcredits-bench")
    cluster = rhc.Cluster(namespace, "bench-")
    from kubernetes.client import V1Namespace, V1ObjectMeta

    try:
        cluster.core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)))
    except ApiException as e:
        if e.status != 409:
            raise
    user = "bench-alice"
    had, took = fill(cluster, count, user)
    print(f"namespace {namespace}: {count} CreditAccounts ({had} were there; "
          f"created the rest in {took:.1f} s)", flush=True)

    import tempfile

    workdir = tempfile.mkdtemp(prefix="hubcredits-bench-")
    kubeconfig = cluster.service_account_kubeconfig(
        os.path.join(workdir, "hub.kubeconfig"), "bench-hub", with_role=True)
    os.environ["HUBCREDITS_NAMESPACE"] = namespace
    stock = rhc.CreditsHub(workdir, "stock", namespace, kubeconfig, 8888, [], glue=False)
    glue = rhc.CreditsHub(workdir, "glue", namespace, kubeconfig, 8888, [], glue=True)
    with stock, glue:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "hubcredits: watching" not in glue.log():
            time.sleep(0.5)
        lines = [x for x in glue.log().splitlines() if "hubcredits: watching" in x]
        print("    " + lines[-1].split("] ", 1)[-1], flush=True)
        rss = {"stock": rss_kib(stock.proc.pid), "glue": rss_kib(glue.proc.pid)}
        pages = measure({"stock": stock, "glue": glue}, user, n)
        rss_after = {"stock": rss_kib(stock.proc.pid), "glue": rss_kib(glue.proc.pid)}
    print(json.dumps({"pages": pages, "rss_kib_synced": rss, "rss_kib_after": rss_after},
                     indent=1), flush=True)
    cache, memory = cache_memory(cluster)
    print(f"cache: {json.dumps(memory)}", flush=True)
    renders = render_bench(cache, user, int(os.environ.get("BENCH_RENDERS", "5000")))
    print(f"renders: {json.dumps(renders)}", flush=True)
    ok = True
    for page, r in renders.items():
        delta = r["glue"]["p99_ms"] - r["stock"]["p99_ms"]
        print(f"render {page}: p99 {r['stock']['p99_ms']} ms without the glue, "
              f"{r['glue']['p99_ms']} ms with it ({delta:+.2f} ms; p50 {r['stock']['p50_ms']} / "
              f"{r['glue']['p50_ms']} ms; credits box: {r['box']})")
        ok = ok and delta <= limit
    for path in PAGES:
        a, b = pages["stock"][path], pages["glue"][path]
        print(f"GET {path} (hub log): p50 {a['server_p50_ms']} / {b['server_p50_ms']} ms, "
              f"p99 {a['server_p99_ms']} / {b['server_p99_ms']} ms without / with the glue")
    print(f"hub RSS after the requests: {rss_after['stock'] / 1024:.1f} MiB without the glue, "
          f"{rss_after['glue'] / 1024:.1f} MiB with it and {count} accounts cached")
    if os.environ.get("BENCH_CLEANUP"):
        cluster.custom.delete_collection_namespaced_custom_object(
            rhc.GROUP, rhc.VERSION, namespace, "creditaccounts")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
