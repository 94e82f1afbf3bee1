"""The story on a real node; run by test/cluster/run.sh (make test-cluster).

A JupyterHub 5.5 with real KubeSpawner 7.1 and the hub glue runs on this host,
as the ServiceAccount ``hub`` of namespace ``jhub`` (the stand-in for Zero to
JupyterHub that run.sh applied), against the real node where hubcredits runs
as a pod from its image, installed and switched to Fail and shadow off as
docs/install.md says. Every user server is a real pod of the stub image
(test/images/singleuser) that the hub reaches through its proxy.

Steps, each asserted:

1. ann (35 credits; every server costs 10 every 5 s here) spawns: the first
   progress message after "Server requested" is the price; the pod really
   runs (kubelet reports its container running) and answers through the
   hub's proxy.
2. ann is charged at each boundary (periodsPaid 1, 2, 3, from the running
   pod), and when the next period cannot be paid the operator, from its pod,
   stops the server through the Hub API (the hub logs the DELETE by service
   hubcredits): the hub has no server for ann, the pod is gone, 5 credits are
   left and the account's totals add up.
3. dora (3 credits) is denied, with the operator's sentence, on the REST API
   and in the browser (spawn page).
4. carl's server runs while the leader operator pod is deleted; its
   replacement keeps billing: after the server is stopped, it was charged
   once for every period begun between its start and its end, no more, no
   less, and the account's totals add up.
5. erin's node is lost (kubelet killed, her container still running): the
   node controller marks it, her pod is evicted (5 s toleration), and the
   operator ends billing at the eviction; the node comes back and the pod
   is gone.
6. The operator's pods run as the chart says (read-only root, no writable
   /tmp), and the PodDisruptionBudget lets one replica be evicted, not two.

Environment (run.sh sets them): KUBECONFIG (admin), NODE_IP, HUB_PORT,
HUBCREDITS_TOKEN (the token in Secret hub), HUB_NAMESPACE, CLUSTER_STATE (the cluster's
state directory, for ``hubcredits-cluster kubelet stop|start``). Prints PASS/FAIL per
check, then "N passed, M failed"; exits 1 on any failure.
"""

import datetime
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
HUBTESTS = os.path.join(HERE, "..", "hub")
FILES = os.path.abspath(os.path.join(HERE, "..", "..", "charts", "hubcredits", "files"))
sys.path.insert(0, HUBTESTS)

import real_hub_e2e  # noqa: E402
from real_hub_credits import Cluster, CreditsHub  # noqa: E402
from real_hub_e2e import Checks, free_port, observed, page_text, visible_text  # noqa: E402

from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

NS = os.environ.get("HUB_NAMESPACE", "jhub")
NODE_IP = os.environ["NODE_IP"]
HUB_PORT = int(os.environ["HUB_PORT"])
TOKEN = os.environ["HUBCREDITS_TOKEN"]
PRICE, INTERVAL = 10, 5  # credits every seconds, for every server in this story
STUB_IMAGE = "localhost/hubcredits/singleuser-stub:test"
NODE = "hubcredits-node"
STATE = os.environ["CLUSTER_STATE"]
CLUSTER_BIN = os.path.join(HERE, "..", "..", "bin", "hubcredits-cluster")


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


class Hub(CreditsHub):
    """JupyterHub 5.5 + KubeSpawner 7.1 + the glue, as ServiceAccount hub.

    real_hub_credits.CreditsHub runs it (start, stop, API, login, progress);
    this configuration adds the hubcredits service of the Z2JH values and the
    stub image, on the host's address the operator's pods reach.
    """

    def __init__(self, workdir, kubeconfig):
        super().__init__(workdir, "hub", NS, kubeconfig, port=8888, profiles=[])

    def config(self):
        # The hubcredits service and role as docs/install.md's Z2JH values
        # (hub.services, hub.loadRoles) make them.
        return f"""\
c = get_config()  # noqa
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = "http://0.0.0.0:{HUB_PORT}"
c.JupyterHub.hub_connect_url = "http://{NODE_IP}:{HUB_PORT}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.pid_file = {self.proxy_pid!r}
c.ConfigurableHTTPProxy.auth_token = {secrets.token_hex(16)!r}
c.JupyterHub.db_url = "sqlite:///{self.dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret = bytes.fromhex({secrets.token_hex(32)!r})
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.last_activity_interval = 3600
c.JupyterHub.services = [
    {{"name": "e2e", "api_token": {self.token!r}}},
    {{"name": "hubcredits", "api_token": {TOKEN!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "e2e", "scopes": ["admin:users", "admin:servers", "tokens"], "services": ["e2e"]}},
    {{"name": "hubcredits", "scopes": ["delete:servers", "read:users:name"], "services": ["hubcredits"]}},
]
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.image = {STUB_IMAGE!r}
c.KubeSpawner.image_pull_policy = "Never"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 60
# Evicted 5 s after their node is lost (the default is 300 s): step 6.
c.KubeSpawner.tolerations = [
    {{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
      "tolerationSeconds": 5}},
    {{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
      "tolerationSeconds": 5}},
]
c.KubeSpawner.http_timeout = 30
c.Spawner.poll_interval = 2
import hubcredits_hub
hubcredits_hub.install(c)
"""

    def server_state(self, user):
        m = self.api("GET", f"/users/{user}").json()
        return bool(m.get("servers")), m.get("pending")


def wait(pred, timeout, step=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def periods_begun(start, end):
    """The periods begun between start and end, as the set of counts the truncation allows.

    A pod's deletionTimestamp has whole seconds: the deletion was requested in
    [end, end + 1 s). When that second holds a boundary, the period after it may
    or may not have begun (the operator knows: it charged it while the pod ran).
    """
    def begun(t):
        elapsed = (t - start).total_seconds()
        return max(1, int(elapsed // INTERVAL) + (0 if elapsed % INTERVAL == 0 else 1))
    return {begun(end), begun(end + datetime.timedelta(seconds=0.999))}


def charged_per_period_begun(cluster, checks, user, start, end, how):
    """The user's account (one server) paid exactly the periods begun from start to end."""
    st = cluster.account(user)["status"]
    net = st.get("totalCharged", 0) - st.get("totalRefunded", 0)
    begun = periods_begun(start, end)
    observed(f"{user}'s server", f"started {start.isoformat()}, {how} {end.isoformat()}, "
             f"charged {net}")
    checks.check(f"{user}: one charge for every period begun until {how}, no more, no less",
                 net in {PRICE * n for n in begun}, f"charged {net}, {begun} periods began")


def server_entry(cluster, account, user):
    for s in cluster.account(account).get("status", {}).get("servers", []):
        if s.get("user") == user:
            return s
    return None


def pod_running(cluster, user):
    try:
        pod = cluster.core.read_namespaced_pod(f"jupyter-{user}", NS)
    except ApiException:
        return None
    for cs in pod.status.container_statuses or []:
        if cs.state and cs.state.running:
            return pod
    return None


def pod_gone(cluster, user):
    try:
        cluster.core.read_namespaced_pod(f"jupyter-{user}", NS)
        return False
    except ApiException as e:
        return e.status == 404


def totals_add_up(cluster, account, initial):
    st = cluster.account(account)["status"]
    want = (initial + st.get("totalGranted", 0) + st.get("totalToppedUp", 0)
            + st.get("totalRefunded", 0) - st.get("totalCharged", 0))
    return st["balance"] == want, (f"balance {st['balance']}, opened {initial} + granted "
                                   f"{st.get('totalGranted', 0)} + topped up "
                                   f"{st.get('totalToppedUp', 0)} + refunded "
                                   f"{st.get('totalRefunded', 0)} - charged "
                                   f"{st.get('totalCharged', 0)}")


def spawn(hub, cluster, checks, user):
    token = hub.user_token(user)
    r = hub.api("POST", f"/users/{user}/server")
    checks.check(f"{user}: the hub accepts the spawn", r.status_code in (201, 202), r.text[:300])
    events = hub.progress(user, token)
    msgs = [e.get("message", "") for e in events]
    observed(f"{user}'s progress", " | ".join(msgs))
    first = next((m for m in msgs if "Server requested" not in m), "")
    checks.check(f"{user}: the price is the first progress message after 'Server requested'",
                 first == f"This server costs {PRICE} credits / {INTERVAL} s, paid from account "
                 f"story-{user}.", first)
    checks.check(f"{user}: the spawn is ready", bool(events) and events[-1].get("ready"),
                 msgs[-1:] and msgs[-1])
    pod = wait(lambda: pod_running(cluster, user), 30)
    checks.check(f"{user}: the pod really runs (kubelet reports its container running)",
                 pod is not None)
    r = requests.get(f"{hub.url}/user/{user}/", headers={"Authorization": f"token {token}"},
                     timeout=30, allow_redirects=True)
    checks.check(f"{user}: the server answers through the hub's proxy",
                 r.status_code == 200 and f"Stub single-user server of {user}" in r.text,
                 f"{r.status_code} {r.text[:200]}")
    return token


def run(checks):
    cluster = Cluster(NS, "story-")
    work = tempfile.mkdtemp(prefix="hubcredits-story-")
    hub_kubeconfig = cluster.service_account_kubeconfig(
        os.path.join(work, "hub.kubeconfig"), "hub", with_role=False)
    # Every server in this story costs PRICE every INTERVAL seconds.
    cluster.apply("billingpolicies", "fast", {
        "podSelector": {}, "billingValue": PRICE, "billingInterval": f"{INTERVAL}s",
        "priority": 1000})
    accounts = {"ann": 35, "dora": 3, "carl": 100000, "erin": 100000}
    for user, balance in accounts.items():
        cluster.apply("creditaccounts", user, {
            "users": [user], "cap": max(balance, 100), "initialBalance": balance})
    for user in accounts:
        checks.check(f"account story-{user} is open", cluster.wait_open(user))

    with Hub(work, hub_kubeconfig) as hub:
        # 1-2. ann: price, real pod, charges at each boundary, stop via the Hub API.
        spawn(hub, cluster, checks, "ann")
        paid = []
        for n in (2, 3):
            s = wait(lambda: (e := server_entry(cluster, "ann", "ann"))
                     and e.get("periodsPaid", 0) >= n and e, INTERVAL * 3)
            paid.append(s and s.get("periodsPaid"))
        checks.check("ann: charged at each boundary (periods 2 and 3)", paid == [2, 3], paid)
        stopped = wait(lambda: not hub.server_state("ann")[0] and not hub.server_state("ann")[1]
                       and pod_gone(cluster, "ann"), INTERVAL * 6)
        checks.check("ann: stopped when the next period cannot be paid (no server, pod gone)",
                     bool(stopped))
        deletes = re.findall(r".*DELETE /hub/api/users/ann/server.*", hub.log())
        observed("hub log", deletes[-1] if deletes else "(no DELETE)")
        checks.check("ann: the stop came through the Hub API, as service hubcredits",
                     any("hubcredits" in d for d in deletes), deletes[-3:])
        bal = cluster.account("ann")["status"]["balance"]
        checks.check("ann: 5 credits left (35 - 3 periods of 10)", bal == 5, bal)
        ok, detail = totals_add_up(cluster, "ann", accounts["ann"])
        checks.check("ann: the account's totals add up", ok, detail)

        # 3. dora: denied with the operator's sentence, REST and browser.
        # The oracle: the operator's answer to a direct create as the hub.
        import e2e_spawner
        e2e_spawner._api = client.CoreV1Api(config.new_client_from_config(hub_kubeconfig))
        oracle = real_hub_e2e.probe_denial(NS, "dora")
        observed("the operator's sentence", oracle)
        want = real_hub_e2e.Expected(oracle=oracle)  # balances in it may move: wildcards
        dora_token = hub.user_token("dora")
        r = hub.api("POST", "/users/dora/server")
        checks.equal("dora: REST start is accepted (202), the denial follows "
                     "(slow_spawn_timeout 0, as Z2JH sets it)", r.status_code, 202)
        events = hub.progress("dora", dora_token)
        last = events[-1] if events else {}
        checks.check("dora: the progress stream ends 'Spawn failed: <the sentence>'",
                     last.get("failed") is True and want.equals(last.get("message", ""),
                                                                "Spawn failed: "), last)
        wait(lambda: not any(hub.server_state("dora")), 30)
        session = hub.login("dora")
        r = session.get(f"{hub.url}/hub/spawn/dora", allow_redirects=False, timeout=60)
        checks.equal("dora: the browser's start goes to the pending page",
                     (r.status_code, r.headers.get("Location")), (302, "/hub/spawn-pending/dora"))
        hub.progress("dora", dora_token)
        page = visible_text(page_text(session.get(f"{hub.url}/hub/spawn-pending/dora", timeout=60)))
        checks.check("dora: the pending page shows the sentence", want.within(page), page[:400])
        checks.check("dora: no pod", pod_gone(cluster, "dora"))

        # 4. carl: the leader operator pod is deleted mid-billing.
        spawn(hub, cluster, checks, "carl")
        wait(lambda: (e := server_entry(cluster, "carl", "carl"))
             and e.get("periodsPaid", 0) >= 2, INTERVAL * 3)
        coordination = client.CoordinationV1Api()

        def leader():
            lease = coordination.read_namespaced_lease("hubcredits.hubcredits.io", NS)
            return (lease.spec.holder_identity or "").split("_")[0]

        old_leader = leader()
        cluster.core.delete_namespaced_pod(old_leader, NS)
        observed("deleted the leader", old_leader)
        new_leader = wait(lambda: (h := leader()) != old_leader and h, 60)
        checks.check("carl: another replica leads after the leader pod is deleted",
                     bool(new_leader), new_leader)
        before = server_entry(cluster, "carl", "carl")["periodsPaid"]
        grew = wait(lambda: server_entry(cluster, "carl", "carl")["periodsPaid"]
                    >= before + 2, INTERVAL * 4)
        checks.check("carl: billing goes on under the new leader", bool(grew))
        start = parse_time(server_entry(cluster, "carl", "carl")["startedAt"])
        deleted = {}

        def watch_deletion():
            w = watch.Watch()
            for ev in w.stream(cluster.core.list_namespaced_pod, NS, timeout_seconds=90,
                               field_selector="metadata.name=jupyter-carl"):
                m = ev["object"].metadata
                if m.deletion_timestamp:
                    deleted["at"] = m.deletion_timestamp - datetime.timedelta(
                        seconds=m.deletion_grace_period_seconds or 0)
                    w.stop()

        watcher = threading.Thread(target=watch_deletion, daemon=True)
        watcher.start()
        time.sleep(1)  # the watch is established
        hub.api("DELETE", "/users/carl/server")
        watcher.join(60)
        end = deleted.get("at")
        checks.check("carl: the hub deletes the pod", end is not None)
        checks.check("carl: stopped by the user", bool(wait(lambda: pod_gone(cluster, "carl"), 60)))
        settled = wait(lambda: server_entry(cluster, "carl", "carl") is None, 60)
        checks.check("carl: the operator settles the ended server", bool(settled))
        if end is not None:
            charged_per_period_begun(cluster, checks, "carl", start, end, "ended")
        ok, detail = totals_add_up(cluster, "carl", accounts["carl"])
        checks.check("carl: the account's totals add up", ok, detail)
        tokens_in_log = [t for t in (TOKEN,) if t in "".join(
            cluster.core.read_namespaced_pod_log(p.metadata.name, NS)
            for p in cluster.core.list_namespaced_pod(
                NS, label_selector="app.kubernetes.io/name=hubcredits").items)]
        checks.check("the operator's logs hold no Hub API token", not tokens_in_log)

        # 5. erin's node is lost (its kubelet killed; containers go on running).
        node_lost(hub, cluster, checks)

    # 6. The operator's pods as the chart runs them; the PodDisruptionBudget.
    operator_pods(cluster, checks)


def node_ready(cluster):
    node = cluster.core.read_node(NODE)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def kubelet(action):
    subprocess.run([CLUSTER_BIN, "kubelet", action, "--state-dir", STATE], check=True)


def node_lost(hub, cluster, checks):
    spawn(hub, cluster, checks, "erin")
    e = wait(lambda: (x := server_entry(cluster, "erin", "erin")) and x.get("startedAt") and x, 30)
    start = parse_time(e["startedAt"])
    kubelet("stop")
    try:
        lost = wait(lambda: not node_ready(cluster), 90)
        checks.check("erin: the node controller sees the node lost", bool(lost))

        def evicted():
            try:
                m = cluster.core.read_namespaced_pod("jupyter-erin", NS).metadata
            except ApiException:
                return None
            return m.deletion_timestamp and m.deletion_timestamp - datetime.timedelta(
                seconds=m.deletion_grace_period_seconds or 0)

        end = wait(evicted, 30)
        if end is None:
            # With its only node lost, the node lifecycle controller may enter
            # full-disruption mode and hold every eviction (it cannot tell a
            # lost node from a lost control plane): delete the pod as the
            # taint manager does on a cluster with other nodes.
            observed("eviction", "none in 30 s (one node, full disruption): the pod is deleted")
            cluster.core.delete_namespaced_pod("jupyter-erin", NS)
            end = wait(evicted, 30)
        checks.check("erin: her pod is deleted on the lost node", end is not None)
        settled = wait(lambda: server_entry(cluster, "erin", "erin") is None, 60)
        checks.check("erin: the operator ends her server while the node is lost", bool(settled))
        if end:
            charged_per_period_begun(cluster, checks, "erin", start, end, "evicted")
    finally:
        kubelet("start")
    checks.check("the node is back", bool(wait(lambda: node_ready(cluster), 90)))
    checks.check("erin's evicted pod is gone once the node is back",
                 bool(wait(lambda: pod_gone(cluster, "erin"), 90)))
    ok, detail = totals_add_up(cluster, "erin", 100000)
    checks.check("erin: the account's totals add up", ok, detail)


def operator_pods(cluster, checks):
    sel = "app.kubernetes.io/name=hubcredits"

    def ready_pods():
        pods = cluster.core.list_namespaced_pod(NS, label_selector=sel).items
        return [p for p in pods if not p.metadata.deletion_timestamp and any(
            c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]

    pods = wait(lambda: (r := ready_pods()) and len(r) == 2 and r, 120)
    checks.check("two operator replicas are ready", bool(pods))
    if not pods:
        return
    c = pods[0].spec.containers[0]
    mounts = sorted(m.mount_path for m in c.volume_mounts or [])
    observed("the manager's mounts", mounts)
    checks.check("the manager runs with a read-only root filesystem, as a non-root user",
                 c.security_context.read_only_root_filesystem is True
                 and c.security_context.run_as_non_root is True)
    checks.check("no writable /tmp: only read-only Secret volumes are mounted",
                 "/tmp" not in mounts and all(m.read_only for m in c.volume_mounts or []),
                 mounts)

    def evict(name):
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=NS))
        try:
            cluster.core.create_namespaced_pod_eviction(name, NS, body)
            return 201
        except ApiException as e:
            return e.status

    first, second = pods[0].metadata.name, pods[1].metadata.name
    checks.equal("the PodDisruptionBudget lets one replica be evicted", evict(first), 201)
    checks.equal("and refuses the other while the first's replacement is not ready",
                 evict(second), 429)
    back = wait(lambda: len(ready_pods()) == 2, 180)
    checks.check("the replacement becomes ready (its readiness probe passes)", bool(back))


def main():
    checks = Checks()
    try:
        run(checks)
    finally:
        print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
