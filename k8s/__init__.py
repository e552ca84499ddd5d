"""Kubernetes deployment of Bastion (KubeRay) and the tools that keep its manifests honest.

The manifests are a kustomize tree (``base/``, ``components/``, ``overlays/``); this package
generates the parts that must equal what the code says (:mod:`k8s.render`), renders the tree
with ``kubectl kustomize`` (:mod:`k8s.kustomize`) and validates it against Kubernetes' and
KubeRay's schemas (:mod:`k8s.validate`). See docs/deployment.md.
"""
