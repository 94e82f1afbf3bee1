"""The story next to the real Zero to JupyterHub chart; run by test/z2jh/run.sh.

Z2JH 4.4.0's hub (JupyterHub 5.5.1, KubeSpawner 7.0.0, the chart's own
jupyterhub_config.py and z2jh.py) and proxy run as pods, with the values an
admin sets plus those the hubcredits NOTES print; hubcredits runs from its
image as docs/install.md installs it. Everything below goes through the
proxy-public Service, as a browser does (log in, the spawn form, the progress
stream, the server's page), or reads the cluster as an admin.

Steps, each asserted:

1. The cluster's DNS: in the hub pod, "hub" and "proxy-api" resolve to their
   Services (Z2JH's config and the proxy use these names); a name outside
   the cluster does not resolve (nothing is forwarded).
2. ann (wallet of 35; every server costs 10 every 5 s here) logs in, the
   spawn form lists Z2JH's profiles with their prices, she starts "Standard":
   the first progress message after "Server requested" is the price; the pod
   runs and answers through the proxy.
3. ann is charged at each boundary; when the next period cannot be paid the
   operator stops the server through the Hub API at the hub Service, with the
   token of Secret "hub" that Z2JH generated (the hub logs the DELETE by
   service hubcredits); 5 credits are left, the totals add up.
4. ann starts again: the progress stream ends with the operator's sentence
   ("Spawn failed: ..."), and no pod is made.
5. alice (the samples: her wallet names the project pool physics) starts
   "Standard": the pool pays first, her wallet is untouched. bob (listed by
   physics only) picks "Physics project": his pod carries the profile's
   label and the pool pays.
   carol, with no account, gets a wallet on her first spawn after the
   operator asked the hub about her (GET /users/carol, scope read:users:name).
6. Z2JH's NetworkPolicies are on, and enforced (make cluster runs
   kube-router's network policy controller): while carol's server runs,
   from inside each pod's network namespace (nsenter from the host), the
   operator's pods reach the Hub API at the hub Service (their label
   hub.jupyter.org/network-access-hub, as documented), the hub reaches
   carol's server; a probe pod without the labels, in the same namespace,
   reaches neither the hub's port 8081 nor carol's server (refused or timed
   out in seconds), and reaches the hub once given the label.

With --after-uninstall (run.sh, after docs/install.md's Uninstall and a
restart of the hub): the Hub API answers through the proxy, and ann, denied
in step 4, starts a server that nothing prices (no hubcredits.io/ annotation
or label on her pod, no CreditsReserved event on it), which answers through
the proxy and stops.

Environment: KUBECONFIG (admin), HUB_NAMESPACE (jhub). Prints PASS/FAIL per
check, then "N passed, M failed"; exits 1 on any failure.
"""

import json
import os
import re
import subprocess
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hub"))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))

import e2e_spawner  # noqa: E402
from real_hub_credits import Cluster  # noqa: E402
from real_hub_e2e import (  # noqa: E402
    DENIED_MARK, Checks, Expected, observed, page_text, visible_text)

from kubernetes import client  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

NS = os.environ.get("HUB_NAMESPACE", "jhub")
PASSWORD = "z2jh-test"  # hub.config.DummyAuthenticator.password in z2jh-values.yaml
PRICE, INTERVAL = 10, 5
TOKEN_KEY = "hub.services.hubcredits.apiToken"


def wait(pred, timeout, step=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


class Browser:
    """One user's browser session at the proxy-public Service."""

    def __init__(self, url, user):
        self.url, self.user = url, user
        self.s = requests.Session()
        self.s.get(f"{url}/hub/login", timeout=30)
        r = self.s.post(f"{url}/hub/login?next=/hub/home",
                        data={"username": user, "password": PASSWORD, "_xsrf": self.xsrf()},
                        allow_redirects=False, timeout=30)
        if r.status_code != 302:
            raise SystemExit(f"login as {user} through the proxy: {r.status_code} {r.text[:300]}")

    def xsrf(self):
        return self.s.cookies.get("_xsrf", "")

    def spawn_form(self):
        r = self.s.get(f"{self.url}/hub/spawn/{self.user}", timeout=60)
        page = page_text(r)
        slugs = re.findall(r'<input[^>]*name="profile"[^>]*value="([^"]*)"', page)
        return r.status_code, page, slugs

    def start(self, profile):
        r = self.s.post(f"{self.url}/hub/spawn/{self.user}",
                        data={"profile": profile, "_xsrf": self.xsrf()},
                        allow_redirects=False, timeout=60)
        return r.status_code, r.headers.get("Location", "")

    def progress(self, timeout=120):
        events = []
        r = self.s.get(f"{self.url}/hub/api/users/{self.user}/server/progress",
                       params={"_xsrf": self.xsrf()},
                       headers={"Referer": f"{self.url}/hub/spawn-pending/{self.user}"},
                       stream=True, timeout=timeout)
        if r.status_code != 200:
            return [{"message": f"{r.status_code} {r.text[:300]}", "failed": True}]
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line.split(":", 1)[1]))
                if events[-1].get("failed") or events[-1].get("ready"):
                    break
        r.close()
        return events

    def idle(self):
        """The hub has no server, running or pending, for this user (her own model)."""
        r = self.s.get(f"{self.url}/hub/api/users/{self.user}",
                       headers={"Referer": f"{self.url}/hub/home"}, timeout=30)
        m = r.json() if r.status_code == 200 else {}
        return r.status_code == 200 and not m.get("servers") and not m.get("pending")

    def get(self, path):
        return self.s.get(f"{self.url}{path}", timeout=60)

    def stop(self):
        return self.s.delete(f"{self.url}/hub/api/users/{self.user}/server",
                             headers={"X-XSRFToken": self.xsrf(),
                                      "Referer": f"{self.url}/hub/home"}, timeout=60)


def price_message(account):
    return f"This server costs {PRICE} credits / {INTERVAL} s, paid from account {account}."


def server_entry(cluster, account, user):
    for s in cluster.account(account).get("status", {}).get("servers", []):
        if s.get("user") == user:
            return s
    return None


def pod_phase(cluster, user):
    try:
        pod = cluster.core.read_namespaced_pod(f"jupyter-{user}", NS)
    except ApiException:
        return None
    running = any(cs.state and cs.state.running for cs in pod.status.container_statuses or [])
    return "running" if running else pod.status.phase


def pod_gone(cluster, user):
    return pod_phase(cluster, user) is None


def totals_add_up(cluster, account, initial):
    st = cluster.account(account)["status"]
    want = (initial + st.get("totalGranted", 0) + st.get("totalToppedUp", 0)
            + st.get("totalRefunded", 0) - st.get("totalCharged", 0))
    return st["balance"] == want, st


def hub_pod(cluster):
    pods = cluster.core.list_namespaced_pod(NS, label_selector="component=hub").items
    return pods[0].metadata.name


def hub_log(cluster):
    return cluster.core.read_namespaced_pod_log(hub_pod(cluster), NS)


def in_hub(cluster, code):
    return subprocess.run(["kubectl", "-n", NS, "exec", hub_pod(cluster), "--",
                           "python3", "-c", code],
                          capture_output=True, text=True, timeout=60)


def denial_oracle(user):
    """The operator's sentence for the user's next spawn: a server-side dry run of a
    KubeSpawner-shaped pod, as the hub's ServiceAccount (docs/install.md, step 3)."""
    api = client.ApiClient()
    api.default_headers["Impersonate-User"] = f"system:serviceaccount:{NS}:hub"
    pod = e2e_spawner.pod_manifest(user, {"JUPYTERHUB_USER": user}, NS)
    try:
        client.CoreV1Api(api).create_namespaced_pod(NS, pod, dry_run="All")
    except ApiException as e:
        message = json.loads(e.body).get("message", "")
        if DENIED_MARK in message:
            return message.split(DENIED_MARK, 1)[1].strip()
        raise SystemExit(f"the dry run for {user} was refused, but not by the operator: {message}")
    raise SystemExit(f"the dry run for {user} was admitted; the story expects a denial")


def pod_pid(pod):
    """A process of the pod (its sandbox or a container), found by the pod's
    cgroup (kubelet's cgroupfs driver: .../pod<UID>/...), to enter its network
    namespace from the host."""
    mark = f"pod{pod.metadata.uid}"
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cgroup") as f:
                if mark in f.read():
                    return int(d)
        except OSError:
            continue
    raise SystemExit(f"no process of pod {pod.metadata.name} on this node")


def http_from(pod, url, timeout=4):
    """url fetched from inside the pod's network namespace (nsenter -n, the
    host's curl): the HTTP status code, or curl's error, and the seconds it took."""
    t0 = time.monotonic()
    r = subprocess.run(["nsenter", "-t", str(pod_pid(pod)), "-n", "curl", "-sS", "-o", "/dev/null",
                        "-w", "%{http_code}", "--max-time", str(timeout), url],
                       capture_output=True, text=True, timeout=timeout + 20)
    took = time.monotonic() - t0
    if r.returncode == 0:
        return r.stdout.strip(), took
    return f"curl exit {r.returncode}: {r.stderr.strip()}", took


def blocked(result):
    """Whether a connection was refused or timed out (no HTTP answer)."""
    return result[0].startswith("curl exit ")


PROBE = "netpol-probe"


def probe_pod(cluster):
    """A pod in the hub's namespace with neither of Z2JH's access labels (the
    pause image: a network namespace and nothing else)."""
    cluster.core.create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": PROBE, "labels": {"app": PROBE}},
        "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "pause", "image": "localhost/hubcredits/pause:test",
                                 "imagePullPolicy": "Never"}]}})
    pod = wait(lambda: (p := cluster.core.read_namespaced_pod(PROBE, NS)).status.phase == "Running"
               and p, 60)
    if not pod:
        raise SystemExit(f"pod {PROBE} did not run")
    return pod


def run(checks):
    cluster = Cluster(NS, "")
    net = client.NetworkingV1Api()
    svc = cluster.core.read_namespaced_service("proxy-public", NS)
    url = f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"
    observed("proxy-public", url)

    # 1. DNS in the hub pod.
    names = {n: cluster.core.read_namespaced_service(n, NS).spec.cluster_ip
             for n in ("hub", "proxy-api")}
    r = in_hub(cluster, "import socket; "
                        "print(socket.gethostbyname('hub'), socket.gethostbyname('proxy-api'))")
    checks.equal("DNS: in the hub pod, hub and proxy-api resolve to their Services",
                 r.stdout.split(), [names["hub"], names["proxy-api"]])
    r = in_hub(cluster, "import socket\ntry:\n"
                        " socket.gethostbyname('example.com'); print('resolved')\n"
                        "except OSError as e: print('no:', e)")
    checks.check("DNS: a name outside the cluster does not resolve (nothing is forwarded)",
                 r.stdout.startswith("no:"), r.stdout + r.stderr)

    # The story's price and accounts (the samples of step 2 stay: alice, physics).
    cluster.apply("billingpolicies", "fast", {
        "podSelector": {}, "billingValue": PRICE, "billingInterval": f"{INTERVAL}s",
        "priority": 1000})
    cluster.apply("creditaccounts", "ann", {"users": ["ann"], "cap": 100, "initialBalance": 35})
    checks.check("account ann is open", cluster.wait_open("ann"))

    # 2. ann: the spawn form, the price first, a real pod behind the proxy.
    ann = Browser(url, "ann")
    status, page, slugs = ann.spawn_form()
    text = visible_text(page)
    observed("ann's spawn form", text[:600])
    checks.check("ann: the spawn form lists Z2JH's profiles (Standard, GPU, Physics project)",
                 status == 200 and all(p in text for p in ("Standard", "GPU", "Physics project")),
                 f"{status} {slugs}")
    checks.check("ann: the form shows the price of a profile", f"{PRICE} credits" in text,
                 text[:600])
    checks.check("ann: the pool that does not list her is 'not available', with the sentence",
                 "Physics project (not available)" in text and "does not list them" in text,
                 text[:600])
    observed("profile slugs", slugs)
    standard = next((x for x in slugs if "standard" in x), "")
    physics = next((x for x in slugs if "physics" in x), "")
    status, location = ann.start(standard)
    checks.equal("ann: starting 'Standard' goes to the pending page",
                 (status, location), (302, "/hub/spawn-pending/ann"))
    events = ann.progress()
    msgs = [e.get("message", "") for e in events]
    observed("ann's progress", " | ".join(msgs))
    first = next((m for m in msgs if "Server requested" not in m), "")
    checks.check("ann: the price is the first progress message after 'Server requested'",
                 first == price_message("ann"),
                 first)
    checks.check("ann: the spawn is ready", bool(events) and events[-1].get("ready"), msgs[-1:])
    checks.equal("ann: the pod runs",
                 wait(lambda: pod_phase(cluster, "ann") == "running", 30), True)
    r = ann.get("/user/ann/")
    checks.check("ann: her server answers through Z2JH's proxy",
                 r.status_code == 200 and "Stub single-user server of ann" in r.text,
                 f"{r.status_code} {r.text[:200]}")

    # 3. Charged at each boundary, then stopped through the Hub API.
    paid = []
    for n in (2, 3):
        s = wait(lambda: (e := server_entry(cluster, "ann", "ann"))
                 and e.get("periodsPaid", 0) >= n and e,
                 INTERVAL * 3)
        paid.append(s and s.get("periodsPaid"))
    checks.equal("ann: charged at each boundary (periods 2 and 3)", paid, [2, 3])
    stopped = wait(lambda: pod_gone(cluster, "ann"), INTERVAL * 6)
    checks.check("ann: stopped when the next period cannot be paid (the pod is gone)",
                 bool(stopped))
    # The hub logs a request when it has answered it: after the pod is gone.
    deletes = wait(lambda: [ln for ln in hub_log(cluster).splitlines()
                            if "DELETE /hub/api/users/ann/server" in ln], 30) or []
    checks.check("ann: the hub has no server for her", bool(wait(ann.idle, 30)))
    observed("hub log", deletes[-1] if deletes else "(no DELETE)")
    checks.check("ann: the stop came through the Hub API at the hub Service, as service hubcredits",
                 any(re.search(r"\b20[24] DELETE /hub/api/users/ann/server .*\(hubcredits@", d)
                     for d in deletes), deletes[-3:])
    secret = cluster.core.read_namespaced_secret("hub", NS)
    operator = cluster.core.list_namespaced_pod(
        NS, label_selector="app.kubernetes.io/name=hubcredits").items
    mounts = [v.secret for p in operator for v in p.spec.volumes or [] if v.secret]
    checks.check("the operator's token is Z2JH's: the key of Secret hub Z2JH generated, mounted",
                 TOKEN_KEY in (secret.data or {})
                 and any(m.secret_name == "hub" and any(i.key == TOKEN_KEY for i in m.items or [])
                         for m in mounts),
                 [(m.secret_name, [i.key for i in m.items or []]) for m in mounts])
    bal = cluster.account("ann")["status"]["balance"]
    checks.equal("ann: 5 credits left (35 - 3 periods of 10)", bal, 5)
    ok, st = totals_add_up(cluster, "ann", 35)
    checks.check("ann: the account's totals add up", ok, st)

    # 4. Denied with the sentence on the next start.
    want = Expected(oracle=denial_oracle("ann"))
    observed("the operator's sentence", want)
    status, location = ann.start(standard)
    if status == 302:
        events = ann.progress()
        last = events[-1] if events else {}
        observed("ann's second start", (status, location, last.get("message")))
        checks.check("ann: the next start ends 'Spawn failed: <the operator's sentence>'",
                     last.get("failed") is True
                     and want.equals(last.get("message", ""), "Spawn failed: "), last)
        page = visible_text(page_text(ann.get("/hub/spawn-pending/ann")))
        checks.check("ann: the pending page, reloaded, shows the sentence", want.within(page),
                     page[:400])
    else:  # the form came back with the sentence
        page = visible_text(page_text(ann.get("/hub/spawn/ann")))
        checks.check("ann: the next start is refused with the operator's sentence",
                     want.within(page), f"{status} {page[:400]}")
    checks.check("ann: no pod", pod_gone(cluster, "ann"))

    # 5. alice: her wallet names the pool physics, which pays first.
    before = {a: cluster.account(a)["status"]["balance"] for a in ("alice", "physics")}
    alice = Browser(url, "alice")
    status, location = alice.start(standard)
    events = alice.progress()
    msgs = [e.get("message", "") for e in events]
    observed("alice's progress", " | ".join(msgs))
    checks.check("alice: the spawn is ready", bool(events) and events[-1].get("ready"), msgs[-1:])
    entry = wait(lambda: next((e for a in ("alice", "physics")
                               if (e := server_entry(cluster, a, "alice"))
                               and e.get("periodsPaid", 0) >= 3), None), INTERVAL * 5)
    after = {a: cluster.account(a)["status"]["balance"] for a in ("alice", "physics")}
    observed("alice's server", (entry, before, after))
    periods = entry.get("periodsPaid", 0) if entry else 0
    checks.check("alice: the pool physics pays first (it lost 10 a period, her wallet nothing)",
                 periods >= 3 and after["alice"] == before["alice"]
                 and before["physics"] - after["physics"] in (PRICE * periods,
                                                              PRICE * (periods + 1)),
                 (periods, before, after))
    r = alice.stop()
    checks.check("alice: she stops her server from the browser", r.status_code in (202, 204),
                 f"{r.status_code} {r.text[:200]}")
    checks.check("alice: the pod is gone", bool(wait(lambda: pod_gone(cluster, "alice"), 60)))

    # bob (listed by physics only) picks the profile "Physics project": the
    # profile's label, set through the form, sends the server to the pool.
    before = cluster.account("physics")["status"]["balance"]
    bob = Browser(url, "bob")
    status, location = bob.start(physics)
    events = bob.progress()
    msgs = [e.get("message", "") for e in events]
    observed("bob's progress", " | ".join(msgs))
    checks.check("bob: the price names the pool his profile chose",
                 price_message("physics") in msgs,
                 msgs)
    labels = (cluster.core.read_namespaced_pod("jupyter-bob", NS).metadata.labels
              if pod_phase(cluster, "bob") else {})
    checks.equal("bob: his pod carries the profile's label (KubeSpawner applied the form's choice)",
                 labels.get("hubcredits.io/account"), "physics")
    entry = wait(lambda: (e := server_entry(cluster, "physics", "bob"))
                 and e.get("periodsPaid", 0) >= 2 and e,
                 INTERVAL * 4)
    checks.check("bob: the pool is charged", bool(entry)
                 and cluster.account("physics")["status"]["balance"] < before, entry)
    checks.check("bob: he stops his server from the browser", bob.stop().status_code in (202, 204))
    checks.check("bob: the pod is gone", bool(wait(lambda: pod_gone(cluster, "bob"), 60)))

    # carol has no account: her first spawn gets a wallet (wallets.autoCreate of the
    # guide's values), once the operator has asked the hub, through the hub
    # Service with Z2JH's token, whether it knows her (scope read:users:name).
    carol = Browser(url, "carol")
    carol.start(standard)
    events = carol.progress()
    msgs = [e.get("message", "") for e in events]
    observed("carol's progress", " | ".join(msgs))
    checks.check("carol: her first spawn is paid from a new wallet",
                 price_message("wallet-carol") in msgs
                 and bool(events) and events[-1].get("ready"), msgs)
    gets = [ln for ln in hub_log(cluster).splitlines() if "GET /hub/api/users/carol " in ln]
    observed("hub log", gets[-1] if gets else "(no GET)")
    checks.check("carol: the operator asked the hub about her, as service hubcredits",
                 any(re.search(r"\b200 GET /hub/api/users/carol .*\(hubcredits@", g)
                     for g in gets), gets[-3:])

    # 6. Z2JH's NetworkPolicies, enforced: traffic between pods while carol's
    # server runs, from inside their network namespaces.
    pols = {p.metadata.name for p in net.list_namespaced_network_policy(NS).items}
    checks.check("Z2JH's NetworkPolicies are on (hub, proxy, singleuser)",
                 {"hub", "proxy", "singleuser"} <= pols, sorted(pols))
    hub_api = f"http://{names['hub']}:8081/hub/api/"
    for p in operator:
        got = http_from(p, hub_api)
        observed(f"{p.metadata.name} -> {hub_api}", got)
        checks.equal(f"the operator's pod {p.metadata.name} reaches the Hub API at the hub Service",
                     got[0], "200")
    hub = cluster.core.read_namespaced_pod(hub_pod(cluster), NS)
    carol_ip = cluster.core.read_namespaced_pod("jupyter-carol", NS).status.pod_ip
    carol_url = f"http://{carol_ip}:8888/user/carol/api"
    got = http_from(hub, carol_url)
    observed(f"hub -> {carol_url}", got)
    checks.check("the hub reaches carol's server (8888)", not blocked(got), got)
    probe = probe_pod(cluster)
    try:
        got = http_from(probe, hub_api)
        observed(f"{PROBE} (no access label) -> {hub_api}", got)
        checks.check("a pod without hub.jupyter.org/network-access-hub does not reach the hub's "
                     "8081 (refused or timed out in seconds)", blocked(got) and got[1] < 10, got)
        got = http_from(probe, carol_url)
        observed(f"{PROBE} -> {carol_url}", got)
        checks.check("nor carol's server", blocked(got) and got[1] < 10, got)
        cluster.core.patch_namespaced_pod(PROBE, NS, {"metadata": {"labels": {
            "hub.jupyter.org/network-access-hub": "true"}}})
        got = wait(lambda: (r := http_from(probe, hub_api))[0] == "200" and r, 30, step=1)
        observed(f"{PROBE}, labelled -> {hub_api}", got)
        checks.check("given the label, the same pod reaches the hub (the policy refused it, "
                     "not the network)", bool(got), got)
    finally:
        cluster.core.delete_namespaced_pod(PROBE, NS, grace_period_seconds=0)

    checks.check("carol: she stops her server", carol.stop().status_code in (202, 204))
    checks.check("carol: the pod is gone", bool(wait(lambda: pod_gone(cluster, "carol"), 60)))


def after_uninstall(checks):
    cluster = Cluster(NS, "")
    svc = cluster.core.read_namespaced_service("proxy-public", NS)
    url = f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"

    def hub_api():
        try:
            r = requests.get(f"{url}/hub/api/", timeout=10)
        except requests.RequestException:
            return None
        return r if r.status_code == 200 else None
    r = wait(hub_api, 60, step=2)
    checks.check("the restarted hub's API answers through the proxy",
                 bool(r) and "version" in r.json(), r and r.text[:200])
    ann = Browser(url, "ann")
    status, location = ann.start("")
    checks.equal("ann: starting a server goes to the pending page",
                 (status, location), (302, "/hub/spawn-pending/ann"))
    events = ann.progress()
    msgs = [e.get("message", "") for e in events]
    observed("ann's progress", " | ".join(msgs))
    checks.check("ann: the spawn is ready", bool(events) and events[-1].get("ready"), msgs[-1:])
    checks.equal("ann: the pod runs",
                 wait(lambda: pod_phase(cluster, "ann") == "running", 30), True)
    pod = cluster.core.read_namespaced_pod("jupyter-ann", NS)
    meta = {**(pod.metadata.annotations or {}), **(pod.metadata.labels or {})}
    marks = {k: v for k, v in meta.items() if k.startswith("hubcredits.io/")}
    checks.equal("ann: her pod is unpriced (no hubcredits.io/ annotation or label)", marks, {})
    # (the progress stream shows the events of her earlier pods too: same name)
    evs = cluster.core.list_namespaced_event(
        NS, field_selector="involvedObject.name=jupyter-ann,reason=CreditsReserved").items
    checks.check("ann: no CreditsReserved event on her new pod",
                 not any(e.involved_object.uid == pod.metadata.uid for e in evs))
    r = ann.get("/user/ann/")
    checks.check("ann: her server answers through Z2JH's proxy",
                 r.status_code == 200 and "Stub single-user server of ann" in r.text,
                 f"{r.status_code} {r.text[:200]}")
    checks.check("ann: she stops her server", ann.stop().status_code in (202, 204))
    checks.check("ann: the pod is gone", bool(wait(lambda: pod_gone(cluster, "ann"), 60)))


def main():
    checks = Checks()
    try:
        if sys.argv[1:] == ["--after-uninstall"]:
            after_uninstall(checks)
        elif sys.argv[1:]:
            sys.exit("usage: story.py [--after-uninstall]")
        else:
            run(checks)
    finally:
        print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
