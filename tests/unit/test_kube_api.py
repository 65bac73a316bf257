"""The Kubernetes read API's answers over a real store file, without HTTP: revisions,
selectors, paging, watches that resume, 410 for a history that is gone."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager.config import KubeConfig
from mqtt_metamanager.envelope import Resource
from mqtt_metamanager.kube.api import Answer, KubeAPI, Watch
from mqtt_metamanager.kube.reader import Row
from mqtt_metamanager.kube.resources import BY_PLURAL
from mqtt_metamanager.kube.selectors import Selector, SelectorError
from mqtt_metamanager.kube.served import ServedCache
from mqtt_metamanager.kube.serving import KubeServing
from mqtt_metamanager.store import Store
from tests.support import wait_until


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": "7"},
        "spec": {"nodeName": "edge-1"},
        "status": {"phase": "Running"},
    }


@dataclass
class Edge:
    """A store and the read API over it, changed as the service loop changes them: commit,
    then wake the feed (whose catching up the test waits for)."""

    store: Store
    serving: KubeServing

    def put(self, key: str, value: Any) -> None:
        with self.store.atomic():
            self.store.put(Resource.parse(key), value)
        self.committed()

    def delete(self, key: str) -> None:
        with self.store.atomic():
            self.store.delete(key)
        self.committed()

    def committed(self) -> None:
        self.serving.committed(self.store.revision)
        feed = self.serving.feed
        wait_until(lambda: feed.position == self.store.revision, 5, "the feed to catch up")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "meta.db"))
    yield s
    s.close()


@pytest.fixture
def edge(store: Store) -> Iterator[Edge]:
    serving = KubeServing(store.path, store.revision, KubeConfig())
    serving.start()
    yield Edge(store, serving)
    serving.stop()


@pytest.fixture
def api(edge: Edge) -> KubeAPI:
    return edge.serving.api


def answer(api: KubeAPI, path: str, query: str = "") -> Answer:
    got = api.get(path, query)
    assert isinstance(got, Answer), got
    return got


def body(api: KubeAPI, path: str, query: str = "") -> Any:
    """The JSON an answer carries, as a client reads it."""
    return json.loads(answer(api, path, query).body)


def test_every_change_bumps_the_revision_and_objects_carry_theirs(edge: Edge, api: KubeAPI) -> None:
    edge.put("default/pod/a", pod("a"))
    edge.put("default/pod/b", pod("b"))
    edge.put("default/pod/a", pod("a", app="x"))
    listing = body(api, "/api/v1/namespaces/default/pods")
    assert listing["kind"] == "PodList" and listing["metadata"]["resourceVersion"] == "3"
    versions = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in listing["items"]}
    assert versions == {"a": "3", "b": "2"}
    assert all(i["kind"] == "Pod" and i["apiVersion"] == "v1" for i in listing["items"])
    one = body(api, "/api/v1/namespaces/default/pods/b")
    assert one["metadata"]["resourceVersion"] == "2"
    edge.delete("default/pod/b")
    assert edge.store.revision == 4
    assert answer(api, "/api/v1/namespaces/default/pods/b").status == 404


def test_numbers_beyond_64_bits_are_served_exactly(edge: Edge, api: KubeAPI) -> None:
    # orjson alone reads them as floats: 10**30 + 1 came out as 1e30.
    big = pod("a")
    big["spec"]["priority"] = 10**30 + 1
    edge.put("default/pod/a", big)
    assert body(api, "/api/v1/namespaces/default/pods/a")["spec"]["priority"] == 10**30 + 1
    [item] = body(api, "/api/v1/namespaces/default/pods")["items"]
    assert item["spec"]["priority"] == 10**30 + 1
    # A selector on such a number matches in a list as in a watch.
    big["metadata"]["labels"] = {"tier": 10**20 + 1}
    edge.put("default/pod/a", big)
    listed = body(api, "/api/v1/pods", f"labelSelector=tier%3D{10**20 + 1}")["items"]
    assert [i["metadata"]["name"] for i in listed] == ["a"]


def test_a_rolled_back_transaction_takes_its_revisions_back(edge: Edge) -> None:
    edge.put("default/pod/a", pod("a"))
    with pytest.raises(RuntimeError), edge.store.atomic():
        edge.store.put(Resource.parse("default/pod/b"), pod("b"))
        raise RuntimeError("the batch fails")
    assert edge.store.revision == 1
    edge.put("default/pod/c", pod("c"))
    assert edge.store.revision == 2


def test_lists_across_namespaces_cluster_kinds_and_errors(edge: Edge, api: KubeAPI) -> None:
    edge.put("default/pod/a", pod("a"))
    edge.put("kube-system/pod/b", pod("b", "kube-system"))
    edge.put("default/node/edge-1", {"metadata": {"name": "edge-1"}})
    assert len(body(api, "/api/v1/pods")["items"]) == 2
    nodes = body(api, "/api/v1/nodes")
    assert nodes["kind"] == "NodeList" and nodes["items"][0]["metadata"]["name"] == "edge-1"
    assert body(api, "/api/v1/nodes/edge-1")["kind"] == "Node"
    assert answer(api, "/api/v1/namespaces/default/nodes").status == 404
    assert answer(api, "/api/v1/widgets").status == 404
    bad = answer(api, "/api/v1/pods", "labelSelector=app+in+(x")
    assert bad.status == 400
    assert json.loads(bad.body)["kind"] == "Status"
    assert json.loads(bad.body)["reason"] == "BadRequest"
    assert answer(api, "/api/v1/pods", "fieldSelector=spec.color%3Dred").status == 400


def test_discovery(api: KubeAPI) -> None:
    assert body(api, "/api")["versions"] == ["v1"]
    names = {r["name"] for r in body(api, "/api/v1")["resources"]}
    assert {"pods", "configmaps", "secrets", "services", "nodes"} <= names
    assert body(api, "/apis")["groups"] == []


@pytest.mark.parametrize(
    ("labels", "fields", "expected"),
    [
        ("app=web", "", {"w1", "w2"}),
        ("app==web,tier!=db", "", {"w1", "w2"}),
        ("app in (web, db)", "", {"w1", "w2", "d1"}),
        ("app notin (web)", "", {"d1", "bare"}),
        ("tier", "", {"w2", "d1"}),
        ("!tier", "", {"w1", "bare"}),
        ("", "metadata.name=d1", {"d1"}),
        ("app=web", "metadata.name!=w1", {"w2"}),
        ("", "spec.nodeName=edge-1,status.phase=Running", {"w1", "w2", "d1", "bare"}),
    ],
)
def test_selectors(labels: str, fields: str, expected: set[str]) -> None:
    objects = [
        pod("w1", app="web"),
        pod("w2", app="web", tier="db2"),
        pod("d1", app="db", tier="db"),
        pod("bare"),
    ]
    selector = Selector.parse(labels, fields)
    assert {o["metadata"]["name"] for o in objects if selector.matches(o)} == expected


@pytest.mark.parametrize("text", ["app in web", "a b", "=x", "app in ()", "app in ((x))"])
def test_selectors_that_cannot_be_read(text: str) -> None:
    with pytest.raises(SelectorError):
        Selector.parse(text)


def test_paging_with_limit_and_continue(edge: Edge, api: KubeAPI) -> None:
    for i in range(25):
        edge.put(f"default/pod/p{i:02}", pod(f"p{i:02}", app="x" if i % 2 else "y"))
    names: list[str] = []
    query = "limit=4&labelSelector=app%3Dx"
    for _ in range(10):
        page = body(api, "/api/v1/namespaces/default/pods", query)
        names += [i["metadata"]["name"] for i in page["items"]]
        assert page["metadata"]["resourceVersion"] == "25"
        token = page["metadata"].get("continue")
        if not token:
            break
        query = f"limit=4&labelSelector=app%3Dx&continue={token}"
    assert names == [f"p{i:02}" for i in range(1, 25, 2)]
    assert answer(api, "/api/v1/pods", "continue=garbage!").status == 400


def lines(watch: Watch, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of a stream (a chunk may carry several lines)."""
    events = (json.loads(line) for chunk in watch.lines for line in chunk.splitlines())
    return list(itertools.islice(events, count))


def test_a_watch_resumes_from_a_revision_in_commit_order(edge: Edge, api: KubeAPI) -> None:
    edge.put("default/pod/a", pod("a"))
    edge.put("default/configmap/c", {"metadata": {"name": "c"}})
    edge.put("default/pod/a", pod("a", app="x"))
    edge.delete("default/pod/a")
    watch = api.get("/api/v1/namespaces/default/pods", "watch=true&resourceVersion=1")
    assert isinstance(watch, Watch)
    events = lines(watch, 2)
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("MODIFIED", "3"),
        ("DELETED", "4"),
    ]
    # Live: changes committed after the watch started arrive through the feed.
    edge.put("default/pod/b", pod("b"))
    [added] = lines(watch, 1)
    assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "b"


def test_a_watch_without_a_revision_starts_with_the_current_objects(
    edge: Edge, api: KubeAPI
) -> None:
    edge.put("default/pod/a", pod("a"))
    watch = api.get("/api/v1/pods", "watch=1&timeoutSeconds=5")
    assert isinstance(watch, Watch)
    [first] = lines(watch, 1)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "a"


def test_a_revision_older_than_the_history_is_gone(edge: Edge, api: KubeAPI) -> None:
    for i in range(5):
        edge.put(f"default/pod/p{i}", pod(f"p{i}"))
    with edge.store.atomic():
        assert edge.store.prune_changes(keep=2) == 3
    gone = answer(api, "/api/v1/pods", "watch=true&resourceVersion=1")
    assert gone.status == 410 and json.loads(gone.body)["reason"] == "Expired"
    fine = api.get("/api/v1/pods", "watch=true&resourceVersion=3")
    assert isinstance(fine, Watch)
    assert [e["object"]["metadata"]["name"] for e in lines(fine, 2)] == ["p3", "p4"]


def test_paging_without_a_selector_ends_where_the_objects_end(edge: Edge, api: KubeAPI) -> None:
    for i in range(8):
        edge.put(f"default/pod/p{i}", pod(f"p{i}"))
    for limit, sizes in ((4, [4, 4]), (3, [3, 3, 2]), (8, [8]), (9, [8])):
        seen: list[int] = []
        query = f"limit={limit}"
        for _ in range(5):
            page = body(api, "/api/v1/namespaces/default/pods", query)
            seen.append(len(page["items"]))
            token = page["metadata"].get("continue")
            if not token:
                break
            query = f"limit={limit}&continue={token}"
        assert seen == sizes, limit


def test_a_changed_object_is_served_anew(edge: Edge, api: KubeAPI) -> None:
    edge.put("default/pod/a", pod("a", app="x"))
    path = "/api/v1/namespaces/default/pods"
    assert body(api, f"{path}/a") == body(api, path)["items"][0]  # read twice: kept
    edge.put("default/pod/a", pod("a", app="y"))
    for served in (body(api, f"{path}/a"), body(api, path)["items"][0]):
        assert served["metadata"]["labels"] == {"app": "y"}
        assert served["metadata"]["resourceVersion"] == "2"
    assert body(api, path, "labelSelector=app%3Dx")["items"] == []


def served_row(i: int, revision: int = 1, **labels: str) -> Row:
    return Row(
        f"default/pod/p{i}", "default", f"p{i}", json.dumps(pod(f"p{i}", **labels)), revision
    )


def test_the_served_cache_keeps_to_its_bytes_dropping_the_least_recently_read() -> None:
    pods = BY_PLURAL["pods"]
    cache = ServedCache(max_bytes=3000)
    rows = [served_row(i) for i in range(20)]
    for row in rows:
        cache.text(row, pods)
        assert cache.size <= 3000
    assert 0 < len(cache) < 20
    hits, misses = cache.hits, cache.misses
    cache.text(rows[-1], pods)  # the last read is kept
    assert (cache.hits, cache.misses) == (hits + 1, misses)
    cache.text(rows[0], pods)  # the first was dropped for later ones
    assert (cache.hits, cache.misses) == (hits + 1, misses + 1)
    newer = json.loads(cache.text(served_row(19, revision=2, app="z"), pods))
    assert newer["metadata"]["labels"] == {"app": "z"}
    assert newer["metadata"]["resourceVersion"] == "2"


def test_the_served_cache_holds_in_memory_about_what_it_counts() -> None:
    # orjson's result keeps the buffer it grew, up to 8 times its length: a cache that
    # counted len() held eight times its bound.
    cache = ServedCache(max_bytes=1 << 20)
    rows = [served_row(i, app="x" * 700) for i in range(200)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for row in rows:
            cache.text(row, BY_PLURAL["pods"])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == 200
    assert held <= 1.5 * cache.size


def test_a_cache_of_no_bytes_keeps_nothing_and_still_serves() -> None:
    cache = ServedCache(max_bytes=0)
    served = json.loads(cache.text(served_row(1), BY_PLURAL["pods"]))
    assert served["kind"] == "Pod" and served["metadata"]["name"] == "p1"
    assert len(cache) == 0 and cache.size == 0


def test_a_watch_sends_only_what_its_namespace_and_selectors_ask_for(
    edge: Edge, api: KubeAPI
) -> None:
    edge.put("default/pod/before", pod("before", app="x"))
    watch = api.get(
        "/api/v1/namespaces/default/pods",
        "watch=true&labelSelector=app%3Dx&resourceVersion=1",
    )
    assert isinstance(watch, Watch)
    edge.put("other/pod/o", pod("o", "other", app="x"))
    edge.put("default/pod/y", pod("y", app="y"))
    edge.put("default/pod/x", pod("x", app="x"))
    edge.put("default/pod/before", pod("before", app="y"))  # leaves the selection
    [first] = lines(watch, 1)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "x")
    by_name = api.get("/api/v1/pods", "watch=true&fieldSelector=metadata.name%3Dy")
    assert isinstance(by_name, Watch)
    [found] = lines(by_name, 1)
    assert found["object"]["metadata"]["labels"] == {"app": "y"}
