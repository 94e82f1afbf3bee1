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
import statistics
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


def measure(hub, user, requests_per_page):
    session = hub.login(user)
    times = {}
    for path in PAGES:
        for _ in range(50):
            session.get(hub.url + path, timeout=30)
        samples = []
        for _ in range(requests_per_page):
            t0 = time.perf_counter()
            r = session.get(hub.url + path, timeout=30)
            samples.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"{path}: {r.status_code}")
        samples.sort()
        times[path] = {
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
            "box": 'id="hubcredits"' in r.text,
        }
    return times


def cache_memory(cluster):
    """Bytes a cache filled from the namespace's list holds (tracemalloc and deep size)."""
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
    return {"accounts": len(cache), "tracemalloc_bytes": traced,
            "deep_size_bytes": cache.memory_bytes(), "list_json_bytes": raw}


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
    results = {}
    for glue in (False, True):
        name = "glue" if glue else "stock"
        hub = rhc.CreditsHub(workdir, name, namespace, kubeconfig, 8888, [], glue=glue)
        with hub:
            if glue:  # wait for the cache to hold the namespace
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and "hubcredits: watching" not in hub.log():
                    time.sleep(0.5)
                lines = [x for x in hub.log().splitlines() if "hubcredits: watching" in x]
                print("    " + lines[-1].split("] ", 1)[-1])
            gc_rss = rss_kib(hub.proc.pid)
            results[name] = {"pages": measure(hub, user, n), "rss_kib": gc_rss}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    memory = cache_memory(cluster)
    print(f"cache: {json.dumps(memory)}", flush=True)
    ok = True
    for path in PAGES:
        stock, glue = results["stock"]["pages"][path], results["glue"]["pages"][path]
        delta = glue["p99_ms"] - stock["p99_ms"]
        print(f"{path}: p99 {stock['p99_ms']} ms without the glue, {glue['p99_ms']} ms with it "
              f"(+{delta:.2f} ms; credits box shown: {glue['box']})")
        ok = ok and delta <= limit
    print(f"hub RSS: {results['stock']['rss_kib'] / 1024:.1f} MiB without the glue, "
          f"{results['glue']['rss_kib'] / 1024:.1f} MiB with it and {count} accounts cached")
    if os.environ.get("BENCH_CLEANUP"):
        cluster.custom.delete_collection_namespaced_custom_object(
            rhc.GROUP, rhc.VERSION, namespace, "creditaccounts")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
