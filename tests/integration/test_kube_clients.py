"""Real Kubernetes clients against the service's read API (SPEC §12): the official Python
client (list, get, watch that resumes) and kubectl, with objects the cloud inserted over
MQTT, while the cloud is away and after a restart."""

from __future__ import annotations

import http.client
import json
import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from prometheus_client.parser import text_string_to_metric_families

from mqtt_metamanager.kube.feed import WATCHER_QUEUE
from tests.support import (
    CLOUD,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    free_port,
    inbox_for,
    reply_to,
    wait_until,
)

pytestmark = pytest.mark.integration

MakeService = Callable[..., ServiceProcess]


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": f"uid-{name}"},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "nginx:1.25"}]},
        "status": {"phase": "Running"},
    }


class Cloud:
    """Sends what the cloud sends over MQTT, each acknowledged before the next."""

    def __init__(self, publisher: Publisher, watcher: Watcher) -> None:
        self.publisher, self.watcher = publisher, watcher

    def send(self, operation: str, resource: str, content: Any = None) -> None:
        message = envelope(operation, resource, content)
        self.publisher.send(message)
        self.watcher.wait_for(CLOUD, reply_to(message["header"]["msg_id"]))


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def service(make_service: MakeService, api_port: int) -> ServiceProcess:
    return make_service(**{"http.listen": f"127.0.0.1:{api_port}"})


@pytest.fixture
def cloud(publisher: Publisher, watcher: Watcher) -> Cloud:
    return Cloud(publisher, watcher)


@pytest.fixture
def core(api_port: int) -> Iterator[k8s.CoreV1Api]:
    config = k8s.Configuration(host=f"http://127.0.0.1:{api_port}")
    with k8s.ApiClient(config) as api_client:
        yield k8s.CoreV1Api(api_client)


def test_the_python_client_lists_gets_and_selects(
    service: ServiceProcess, cloud: Cloud, core: k8s.CoreV1Api
) -> None:
    cloud.send("insert", "default/pod/web", pod("web", app="web"))
    cloud.send("insert", "kube-system/pod/dns", pod("dns", "kube-system", app="dns"))
    cloud.send(
        "insert",
        "default/configmap/cfg",
        {"metadata": {"name": "cfg", "labels": {"app": "x"}}, "data": {"k": "v"}},
    )
    pods = core.list_pod_for_all_namespaces()
    assert sorted(p.metadata.name for p in pods.items) == ["dns", "web"]
    assert int(pods.metadata.resource_version) >= 3
    web = core.read_namespaced_pod("web", "default")
    assert web.spec.containers[0].image == "nginx:1.25" and web.kind == "Pod"
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["web"]
    selected = core.list_pod_for_all_namespaces(label_selector="app in (dns)")
    assert [p.metadata.name for p in selected.items] == ["dns"]
    maps = core.list_namespaced_config_map("default", label_selector="app=x")
    assert maps.items[0].data == {"k": "v"}
    with pytest.raises(k8s.ApiException) as missing:
        core.read_namespaced_pod("nope", "default")
    assert missing.value.status == 404
    with pytest.raises(k8s.ApiException) as write:
        core.delete_namespaced_pod("web", "default")
    assert write.value.status == 405


def test_a_change_over_mqtt_is_in_the_next_list_and_get(
    service: ServiceProcess, cloud: Cloud, core: k8s.CoreV1Api, api_port: int
) -> None:
    cloud.send("insert", "default/pod/web", pod("web", app="v1"))
    for _ in range(2):  # the second read is served from the kept JSON
        assert core.read_namespaced_pod("web", "default").metadata.labels == {"app": "v1"}
        assert core.list_namespaced_pod("default").items[0].metadata.labels == {"app": "v1"}
    cloud.send("update", "default/pod/web", pod("web", app="v2"))
    listed = core.list_namespaced_pod("default")
    assert listed.items[0].metadata.labels == {"app": "v2"}
    assert listed.items[0].metadata.resource_version == listed.metadata.resource_version
    assert core.read_namespaced_pod("web", "default").metadata.labels == {"app": "v2"}
    connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10)
    connection.request("GET", "/metrics")
    families = {
        f.name: f for f in text_string_to_metric_families(connection.getresponse().read().decode())
    }
    connection.close()
    reads = {s.labels["cache"]: s.value for s in families["metamanager_kube_served_reads"].samples}
    assert reads["hit"] >= 2 and reads["miss"] >= 2  # each revision made once, then kept
    assert families["metamanager_kube_served_cache_objects"].samples[0].value == 1
    assert 0 < families["metamanager_kube_served_cache_bytes"].samples[0].value <= 4 << 20


def test_a_watch_sees_mqtt_changes_in_order_and_resumes(
    service: ServiceProcess, cloud: Cloud, core: k8s.CoreV1Api
) -> None:
    cloud.send("insert", "default/pod/a", pod("a"))
    start = core.list_namespaced_pod("default").metadata.resource_version
    seen: list[tuple[str, str, str]] = []
    done = threading.Event()

    def follow(since: str, stop_after: int) -> None:
        stream = k8s_watch.Watch()
        for event in stream.stream(
            core.list_namespaced_pod, "default", resource_version=since, timeout_seconds=20
        ):
            obj = event["object"]
            seen.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
            if len(seen) >= stop_after:
                stream.stop()
        done.set()

    reader = threading.Thread(target=follow, args=(start, 3), daemon=True)
    reader.start()
    cloud.send("insert", "default/pod/b", pod("b"))
    cloud.send("update", "default/pod/a", pod("a", app="changed"))
    cloud.send("delete", "default/pod/b")
    assert done.wait(20), seen
    assert [(t, n) for t, n, _rv in seen] == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    revisions = [int(rv) for _t, _n, rv in seen]
    assert revisions == sorted(revisions)
    # A dropped stream resumes where it left off: from the first event's revision, the rest.
    seen.clear()
    done.clear()
    threading.Thread(target=follow, args=(str(revisions[0]), 2), daemon=True).start()
    assert done.wait(20), seen
    assert [(t, n) for t, n, _rv in seen] == [("MODIFIED", "a"), ("DELETED", "b")]


def test_the_api_answers_with_the_cloud_away_and_after_a_restart(
    service: ServiceProcess, cloud: Cloud, core: k8s.CoreV1Api, api_port: int
) -> None:
    cloud.send("insert", "default/pod/kept", pod("kept"))
    before = core.read_namespaced_pod("kept", "default")
    assert service.stop() == 0
    service.start()
    wait_until(lambda: _answers(api_port), 15, "the API after the restart")
    after = core.read_namespaced_pod("kept", "default")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.spec.node_name == "edge-1"


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def kubectl(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is not installed (Debian: kubernetes-client)"
    return subprocess.run(
        [binary, "--server", f"http://127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kubectl_get_and_watch(service: ServiceProcess, cloud: Cloud, api_port: int) -> None:
    cloud.send("insert", "default/pod/web", pod("web"))
    cloud.send(
        "insert",
        "ops/configmap/a",
        {"metadata": {"name": "a", "namespace": "ops", "labels": {"app": "x"}}},
    )
    cloud.send(
        "insert",
        "ops/configmap/b",
        {"metadata": {"name": "b", "namespace": "ops", "labels": {"app": "y"}}},
    )
    listing = kubectl(api_port, "get", "pods", "-A")
    assert listing.returncode == 0, listing.stderr
    assert "web" in listing.stdout
    one = kubectl(api_port, "get", "pod", "web", "-n", "default", "-o", "json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["spec"]["nodeName"] == "edge-1"
    maps = kubectl(api_port, "get", "configmaps", "-n", "ops", "-l", "app=x", "-o", "name")
    assert maps.returncode == 0, maps.stderr
    assert maps.stdout.split() == ["configmap/a"]
    binary = shutil.which("kubectl")
    assert binary
    follow = subprocess.Popen(
        [binary, "--server", f"http://127.0.0.1:{api_port}", "get", "pods", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert follow.stdout is not None
    out = follow.stdout
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in out], daemon=True).start()
    try:
        assert lines.get(timeout=30) == "pod/web"  # the list
        cloud.send("insert", "default/pod/new", pod("new"))
        assert lines.get(timeout=30) == "pod/new"  # the watch
    finally:
        follow.kill()
        follow.wait()


def test_a_stuck_watcher_is_dropped_while_mqtt_traffic_goes_on(
    service: ServiceProcess, publisher: Publisher, watcher: Watcher, api_port: int
) -> None:
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    stuck.connect(("127.0.0.1", api_port))
    stuck.sendall(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
    # The cloud goes on: far more than the watcher's socket and queue can hold.
    big = "x" * 20_000
    ids = []
    for i in range(1200):
        message = envelope("insert", f"default/pod/p{i}", {**pod(f"p{i}"), "pad": big})
        ids.append(message["header"]["msg_id"])
        publisher.client.publish(inbox_for(message), json.dumps(message), qos=1)
    wait_until(lambda: len(watcher.on(CLOUD)) >= len(ids), 60, "every insert answered")
    assert {m["header"]["parent_msg_id"] for m in watcher.on(CLOUD)} >= set(ids)
    # The server gave up on the watcher: reading what it had sent ends in a close.
    stuck.settimeout(30)
    total = 0
    while chunk := stuck.recv(1 << 20):
        total += len(chunk)
    stuck.close()
    assert total < 1200 * 20_000  # it never got everything: it was dropped on the way
    assert f"a watcher of pod fell {WATCHER_QUEUE} changes behind: dropped" in service.logs()
