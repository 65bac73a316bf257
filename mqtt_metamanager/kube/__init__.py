"""A Kubernetes read API over the local store (SPEC §12): what KubeEdge's MetaServer gives
edge applications, so kubectl and client libraries work on the node, also offline."""
