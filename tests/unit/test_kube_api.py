"""The Kubernetes read API's answers over a real store file, without HTTP: revisions,
selectors, paging, watches that resume, 410 for a history that is gone."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager.envelope import Resource
from mqtt_metamanager.kube.api import Answer, KubeAPI, Watch
from mqtt_metamanager.kube.feed import ChangeFeed
from mqtt_metamanager.kube.reader import StoreReader
from mqtt_metamanager.kube.selectors import Selector, SelectorError
from mqtt_metamanager.store import Store
from tests.support import wait_until


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": "7"},
        "spec": {"nodeName": "edge-1"},
        "status": {"phase": "Running"},
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "meta.db"))
    yield s
    s.close()


@pytest.fixture
def api(store: Store) -> Iterator[KubeAPI]:
    reader = StoreReader(store.path)
    feed = ChangeFeed(reader, store.revision)
    feed.start()
    FEEDS[store.path] = feed
    yield KubeAPI(reader, feed)
    del FEEDS[store.path]
    feed.stop()


FEEDS: dict[str, ChangeFeed] = {}


def committed(store: Store) -> None:
    """What the service loop does after a commit: tell the feed, which catches up."""
    feed = FEEDS.get(store.path)
    if feed is not None:
        feed.notify()
        wait_until(lambda: feed.position == store.revision, 5, "the feed to catch up")


def put(store: Store, key: str, value: Any) -> None:
    with store.atomic():
        store.put(Resource.parse(key), value)
    committed(store)


def answer(api: KubeAPI, path: str, query: str = "") -> Answer:
    got = api.get(path, query)
    assert isinstance(got, Answer), got
    return got


def test_every_change_bumps_the_revision_and_objects_carry_theirs(
    store: Store, api: KubeAPI
) -> None:
    put(store, "default/pod/a", pod("a"))
    put(store, "default/pod/b", pod("b"))
    put(store, "default/pod/a", pod("a", app="x"))
    listing = answer(api, "/api/v1/namespaces/default/pods").body
    assert listing["kind"] == "PodList" and listing["metadata"]["resourceVersion"] == "3"
    versions = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in listing["items"]}
    assert versions == {"a": "3", "b": "2"}
    assert all(i["kind"] == "Pod" and i["apiVersion"] == "v1" for i in listing["items"])
    one = answer(api, "/api/v1/namespaces/default/pods/b").body
    assert one["metadata"]["resourceVersion"] == "2"
    with store.atomic():
        store.delete("default/pod/b")
    assert store.revision == 4
    assert answer(api, "/api/v1/namespaces/default/pods/b").status == 404


def test_a_rolled_back_transaction_takes_its_revisions_back(store: Store) -> None:
    put(store, "default/pod/a", pod("a"))
    with pytest.raises(RuntimeError), store.atomic():
        store.put(Resource.parse("default/pod/b"), pod("b"))
        raise RuntimeError("the batch fails")
    assert store.revision == 1
    put(store, "default/pod/c", pod("c"))
    assert store.revision == 2


def test_lists_across_namespaces_cluster_kinds_and_errors(store: Store, api: KubeAPI) -> None:
    put(store, "default/pod/a", pod("a"))
    put(store, "kube-system/pod/b", pod("b", "kube-system"))
    put(store, "default/node/edge-1", {"metadata": {"name": "edge-1"}})
    assert len(answer(api, "/api/v1/pods").body["items"]) == 2
    nodes = answer(api, "/api/v1/nodes").body
    assert nodes["kind"] == "NodeList" and nodes["items"][0]["metadata"]["name"] == "edge-1"
    assert answer(api, "/api/v1/nodes/edge-1").body["kind"] == "Node"
    assert answer(api, "/api/v1/namespaces/default/nodes").status == 404
    assert answer(api, "/api/v1/widgets").status == 404
    bad = answer(api, "/api/v1/pods", "labelSelector=app+in+(x")
    assert bad.status == 400 and bad.body["kind"] == "Status" and bad.body["reason"] == "BadRequest"
    assert answer(api, "/api/v1/pods", "fieldSelector=spec.color%3Dred").status == 400


def test_discovery(api: KubeAPI) -> None:
    assert answer(api, "/api").body["versions"] == ["v1"]
    names = {r["name"] for r in answer(api, "/api/v1").body["resources"]}
    assert {"pods", "configmaps", "secrets", "services", "nodes"} <= names
    assert answer(api, "/apis").body["groups"] == []


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


def test_paging_with_limit_and_continue(store: Store, api: KubeAPI) -> None:
    for i in range(25):
        put(store, f"default/pod/p{i:02}", pod(f"p{i:02}", app="x" if i % 2 else "y"))
    names: list[str] = []
    query = "limit=4&labelSelector=app%3Dx"
    for _ in range(10):
        page = answer(api, "/api/v1/namespaces/default/pods", query).body
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


def test_a_watch_resumes_from_a_revision_in_commit_order(store: Store, api: KubeAPI) -> None:
    put(store, "default/pod/a", pod("a"))
    put(store, "default/configmap/c", {"metadata": {"name": "c"}})
    put(store, "default/pod/a", pod("a", app="x"))
    with store.atomic():
        store.delete("default/pod/a")
    committed(store)
    watch = api.get("/api/v1/namespaces/default/pods", "watch=true&resourceVersion=1")
    assert isinstance(watch, Watch)
    events = lines(watch, 2)
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("MODIFIED", "3"),
        ("DELETED", "4"),
    ]
    # Live: changes committed after the watch started arrive through the feed.
    put(store, "default/pod/b", pod("b"))
    [added] = lines(watch, 1)
    assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "b"


def test_a_watch_without_a_revision_starts_with_the_current_objects(
    store: Store, api: KubeAPI
) -> None:
    put(store, "default/pod/a", pod("a"))
    watch = api.get("/api/v1/pods", "watch=1&timeoutSeconds=5")
    assert isinstance(watch, Watch)
    [first] = lines(watch, 1)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "a"


def test_a_revision_older_than_the_history_is_gone(store: Store, api: KubeAPI) -> None:
    for i in range(5):
        put(store, f"default/pod/p{i}", pod(f"p{i}"))
    with store.atomic():
        assert store.prune_changes(keep=2) == 3
    gone = answer(api, "/api/v1/pods", "watch=true&resourceVersion=1")
    assert gone.status == 410 and gone.body["reason"] == "Expired"
    fine = api.get("/api/v1/pods", "watch=true&resourceVersion=3")
    assert isinstance(fine, Watch)
    assert [e["object"]["metadata"]["name"] for e in lines(fine, 2)] == ["p3", "p4"]
