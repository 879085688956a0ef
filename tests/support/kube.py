"""pytest plugin: Kubernetes API server fixtures (embedded server; real kube-apiserver when built).

Owned by the Kubernetes-access work (issue 4) and the real-apiserver work (issue 5).
"""
