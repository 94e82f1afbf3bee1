"""A minimal KubeSpawner stand-in for the real-hub test (run-real-hub.sh).

It creates the pod KubeSpawner would create, through the synchronous ``kubernetes``
client like KubeSpawner 2.x, so a denial arrives as the real ``ApiException`` from a
real API server. ``_make_create_pod_request`` mirrors KubeSpawner's (2.0.1 and 7.1.0
are the same but for the client), including ``self.log.exception("Failed for %s",
pod.to_str())``, which writes the pod manifest (with the server's API token) to the
hub log. ``progress``/``events`` mirror KubeSpawner's event streaming.

Environment:

- ``KUBECONFIG``; ``HUB_NAMESPACE`` (where pods go);
- ``E2E_TOKENS_FILE``: each API token put in a pod manifest is appended there, so the
  test can look for it in the hub log;
- ``E2E_ERRORS_FILE``: each ApiException of a pod create is appended there as JSON, so
  the test knows the exact answer to each attempt;
- ``E2E_MISSING_NAMESPACE``: users whose name starts with ``missing-ns`` get their pod
  in this namespace, which does not exist (a 404 that is not a denial);
- ``E2E_EXTRA_LABELS``: a JSON object of extra pod labels; ``E2E_USER_LABELS``: a JSON
  object of such objects by username (what a profile's ``extra_labels`` would add).
"""

import asyncio
import json
import os
import time
from datetime import timedelta
from functools import partial

from jupyterhub.spawner import Spawner
from jupyterhub.utils import exponential_backoff
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from tornado import gen

_api = None


def core_api():
    global _api
    if _api is None:
        config.load_kube_config()
        _api = client.CoreV1Api()
    return _api


def pod_manifest(username, env, namespace, cmd=("jupyterhub-singleuser",)):
    """The parts of a KubeSpawner 7.x / Z2JH pod that the operator looks at.

    ``E2E_EXTRA_LABELS`` (a JSON object) adds labels, e.g. a billing policy label or
    the ``release`` label the operator's webhook may select on.
    """
    name = f"jupyter-{username}"
    extra_labels = json.loads(os.environ.get("E2E_EXTRA_LABELS") or "{}")
    extra_labels.update(json.loads(os.environ.get("E2E_USER_LABELS") or "{}").get(username, {}))
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={
                "app": "jupyterhub",
                "app.kubernetes.io/name": "jupyterhub",
                "app.kubernetes.io/managed-by": "kubespawner",
                "app.kubernetes.io/component": "singleuser-server",
                "component": "singleuser-server",
                "hub.jupyter.org/username": username,
                "hub.jupyter.org/servername": "",
                **extra_labels,
            },
            annotations={
                "hub.jupyter.org/username": username,
                "hub.jupyter.org/kubespawner-version": "e2e",
            },
        ),
        spec=client.V1PodSpec(
            automount_service_account_token=False,
            restart_policy="OnFailure",
            containers=[
                client.V1Container(
                    name="notebook",
                    image="quay.io/jupyterhub/k8s-singleuser-sample:4.0.0",
                    args=list(cmd),
                    ports=[client.V1ContainerPort(name="notebook-port", container_port=8888)],
                    env=[client.V1EnvVar(name=k, value=v) for k, v in sorted(env.items())],
                )
            ],
        ),
    )


class _Reflector:
    """KubeSpawner's pod reflector, as far as the glue reads it: ``pods["ns/name"]``."""

    def __init__(self):
        self.pods = {}


class PodSpawner(Spawner):
    """Creates a KubeSpawner-shaped pod and waits for it like KubeSpawner."""

    _start_future = None
    _last_event = None
    pod_reflector = _Reflector()

    @property
    def namespace(self):
        if self.user.name.startswith("missing-ns"):
            return os.environ["E2E_MISSING_NAMESPACE"]
        return os.environ.get("HUB_NAMESPACE", "default")

    @property
    def pod_name(self):
        return f"jupyter-{self.user.name}"

    def asynchronize(self, method, *args, **kwargs):
        return asyncio.get_running_loop().run_in_executor(None, partial(method, *args, **kwargs))

    def start(self):
        self._start_future = asyncio.ensure_future(self._start())
        return self._start_future

    async def _start(self):
        env = self.get_env()
        tokens_file = os.environ.get("E2E_TOKENS_FILE")
        if tokens_file:
            with open(tokens_file, "a") as f:
                f.write(env["JUPYTERHUB_API_TOKEN"] + "\n")
        pod = pod_manifest(self.user.name, env, self.namespace)
        events = await self.asynchronize(self._list_events)
        if events:
            self._last_event = events[-1]["metadata"]["uid"]
        await exponential_backoff(
            partial(self._make_create_pod_request, pod, 3),
            f"Could not create pod {self.namespace}/{self.pod_name}",
            timeout=30,
        )
        while True:  # no kubelet in the test cluster: this waits until stop or start_timeout
            await asyncio.sleep(1)
            pod = await self.asynchronize(self._read_pod)
            if pod and pod.status and pod.status.phase == "Running" and pod.status.pod_ip:
                return (pod.status.pod_ip, self.port or 8888)

    async def _make_create_pod_request(self, pod, request_timeout):
        # Mirrors KubeSpawner._make_create_pod_request (2.0.1 l.2319-2357).
        try:
            self.log.info(
                f"Attempting to create pod {pod.metadata.name}, with timeout {request_timeout}"
            )
            created = await gen.with_timeout(
                timedelta(seconds=request_timeout),
                self.asynchronize(core_api().create_namespaced_pod, self.namespace, pod),
            )
            # KubeSpawner's reflector would see the admitted pod (with the webhook's
            # annotations) a moment later; here the create's answer stands in for it.
            self.pod_reflector.pods[f"{self.namespace}/{self.pod_name}"] = {
                "metadata": {"name": created.metadata.name,
                             "annotations": dict(created.metadata.annotations or {})}
            }
            return True
        except gen.TimeoutError:
            return False
        except ApiException as e:
            self._record_error(e)
            pod_name = pod.metadata.name
            if e.status != 409:
                # We only want to handle 409 conflict errors
                self.log.exception("Failed for %s", pod.to_str())
                raise
            self.log.info(f"Found existing pod {pod_name}, attempting to kill")
            await self.stop(True)
            self.log.info(f"Killed pod {pod_name}, will try starting singleuser pod again")
            return False

    def _record_error(self, e):
        # The test compares what the user sees with what the API server answered to
        # this very request (the operator's sentence counts down to the next grant).
        path = os.environ.get("E2E_ERRORS_FILE")
        if path:
            body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body
            with open(path, "a") as f:
                f.write(json.dumps({"status": e.status, "body": body}) + "\n")

    def _read_pod(self):
        try:
            return core_api().read_namespaced_pod(self.pod_name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _list_events(self):
        try:
            items = (
                core_api()
                .list_namespaced_event(
                    self.namespace,
                    field_selector=f"involvedObject.kind=Pod,involvedObject.name={self.pod_name}",
                )
                .items
            )
        except ApiException:
            return []
        events = [client.ApiClient().sanitize_for_serialization(e) for e in items]
        return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    @property
    def events(self):
        # KubeSpawner keeps these from a watch; a list is enough here.
        events = []
        for event in self._list_events():
            if self._last_event and event["metadata"]["uid"] == self._last_event:
                events = []
            else:
                events.append(event)
        return events

    async def progress(self):
        # Mirrors KubeSpawner.progress: one message per pod event of this spawn.
        progress, next_event = 0, 0
        start_future = self._start_future
        while True:
            if start_future is None and self._start_future:
                start_future = self._start_future
            done = bool(start_future and start_future.done())
            events = await self.asynchronize(lambda: self.events)
            for event in events[next_event:]:
                progress += (90 - progress) / 3
                yield {
                    "progress": int(progress),
                    "raw_event": event,
                    "message": "%s [%s] %s"
                    % (
                        event.get("lastTimestamp") or event.get("eventTime"),
                        event["type"],
                        event["message"],
                    ),
                }
            next_event = len(events)
            if done:
                break
            await asyncio.sleep(1)

    async def poll(self):
        pod = await self.asynchronize(self._read_pod)
        return None if pod is not None else 0

    async def stop(self, now=False):
        self.pod_reflector.pods.pop(f"{self.namespace}/{self.pod_name}", None)
        try:
            await self.asynchronize(
                core_api().delete_namespaced_pod,
                self.pod_name,
                self.namespace,
                grace_period_seconds=0,
            )
        except ApiException as e:
            if e.status != 404:
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and await self.asynchronize(self._read_pod):
            await asyncio.sleep(0.5)
