"""The one way l2lb reaches the Kubernetes API.

* :mod:`.client` -- ``KubeClient`` (rate-limited, retrying, deadline-aware; raw paths, plain dicts),
  ``KubeError``, ``Resource``/``RESOURCES``, ``add_kube_args``/``client_from_args``.
* :mod:`.ratelimit` -- ``TokenBucket`` (one per process and (qps, burst)), backoff with jitter.
* :mod:`.informer` -- ``Informer``: list + watch cache with handlers, 410 -> relist with diff.
* :mod:`.leader` -- ``LeaderElector`` on coordination.k8s.io/v1 Leases (term = leaseTransitions).
* :mod:`.events` -- ``EventRecorder``: core/v1 Events, deduplicated, aggregated, spam-filtered.
* :mod:`.writes` -- ``patch_status_if_changed``, ``update_with_retry`` (409), ``set_condition``.
"""
