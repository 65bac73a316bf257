"""The Kubernetes resources served, and how each maps to a stored type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    plural: str  # the URL's name: pods
    stored: str  # the store's type: pod
    kind: str  # Pod
    namespaced: bool = True

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_resource(self) -> dict[str, object]:
        """Its entry in ``/api/v1``'s APIResourceList."""
        return {
            "name": self.plural,
            "singularName": self.stored,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["get", "list", "watch"],
        }


KINDS = (
    Kind("pods", "pod", "Pod"),
    Kind("configmaps", "configmap", "ConfigMap"),
    Kind("secrets", "secret", "Secret"),
    Kind("services", "service", "Service"),
    Kind("endpoints", "endpoints", "Endpoints"),
    Kind("nodes", "node", "Node", namespaced=False),
    Kind("persistentvolumes", "persistentvolume", "PersistentVolume", namespaced=False),
    Kind("persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim"),
    Kind("serviceaccounts", "serviceaccount", "ServiceAccount"),
)
BY_PLURAL = {k.plural: k for k in KINDS}
BY_STORED = {k.stored: k for k in KINDS}
