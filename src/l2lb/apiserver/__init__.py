"""Embedded Kubernetes-compatible API server (aiohttp) for the lab, the dev stack and the tests.

Run: ``l2lb apiserver --host 127.0.0.1 --port 6443 --kubeconfig-out PATH [--state-file PATH]
[--watch-window N] [--bookmark-interval S] [--watch-timeout S]``. Plain HTTP; the kubeconfig carries a
dummy token (ignored). kubernetes-asyncio, ``kubectl`` and l2lb's own client use it unchanged.

Served
  * discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``, ``/version``, and a
    stub ``/openapi/v3`` (paths + ``fieldValidation`` only, no schemas) so ``kubectl apply`` uses
    server-side field validation; ``/openapi/v2`` is 404. ``kubectl apply -f dir/`` therefore fails on a
    ``kustomization.yaml`` in the directory: use ``kubectl apply -k dir/`` (or the fixture's ``apply``).
  * core/v1 namespaces, services (+status), nodes (+status), events, endpoints, pods (+status),
    configmaps, secrets, serviceaccounts; discovery.k8s.io/v1 endpointslices; coordination.k8s.io/v1
    leases; events.k8s.io/v1 events (stored apart from core events); apps/v1 deployments, daemonsets;
    rbac.authorization.k8s.io/v1 (cluster)roles(bindings); apiextensions.k8s.io/v1 CRDs. A CRD serves
    every ``served`` version (one shared storage, apiVersion rewritten), its status subresource when
    declared, its printer columns, and checks its openAPIV3Schema (type, enum, required, pattern,
    bounds -> 422; unknown fields pruned, or 400 with ``?fieldValidation=Strict``).
  * list/get/create/update (PUT)/patch/delete/deletecollection, ``?watch``, ``?dryRun=All``,
    ``labelSelector`` (=, ==, !=, in, notin, exists, !exists), ``fieldSelector`` (any dotted path,
    = / !=), kubectl tables (``as=Table``).
  * PATCH: ``application/merge-patch+json`` (RFC 7386), ``application/json-patch+json`` (RFC 6902),
    ``application/strategic-merge-patch+json`` for built-in types (merge keys: status.conditions by
    type, spec.ports by port, addresses by type, ownerReferences by uid, finalizers as a set, pod
    containers/env/volumes by name; directives $patch, $retainKeys, $setElementOrder,
    $deleteFromPrimitiveList). Strategic patches on custom resources -> 415 as on a real server.
  * status subresource: PUT/PATCH ``.../status`` change only status; the main endpoint keeps the stored
    status; create drops status (Nodes keep it).
  * metadata: uid, creationTimestamp, global resourceVersion counter (a no-op write keeps it),
    generation (1, +1 per spec change) on the types a real server keeps it for (custom resources,
    CRDs, EndpointSlices, apps); 409 Conflict on a stale resourceVersion (PUT, PATCH carrying one,
    delete preconditions), 409 AlreadyExists, 404 NotFound, finalizers (deletionTimestamp until the
    list empties), namespace defaulting, namespaced create in a missing namespace -> 404, namespace
    deletion removes its contents at once, default/kube-system/kube-public cannot be deleted (403).
  * Service defaults: type, sessionAffinity, ports' protocol/targetPort, clusterIP(s) from
    10.96.0.0/12, nodePorts, externalTrafficPolicy/internalTrafficPolicy, ipFamilies.
  * watch: chunked JSON lines; no/0 resourceVersion -> synthetic ADDED for current objects; from N ->
    every later event; selectors with ADDED/DELETED on transitions; BOOKMARK (current RV) every
    ``--bookmark-interval`` s when ``allowWatchBookmarks``; ``timeoutSeconds``. A resourceVersion older
    than the retained window (``--watch-window`` events, or ``POST /l2lb-debug/compact``) answers like
    kube-apiserver does: HTTP 200 and one ``ERROR`` event whose object is a Status code 410, reason
    Expired ("too old resource version").
  * bad input (malformed JSON, wrong types, unknown kinds, bad names/labels/selectors, bad patches)
    -> a Kubernetes ``Status`` 4xx; an unexpected exception -> Status 500 and a log line.

Also ``/healthz``, ``/readyz``, ``/livez`` and ``/metrics`` (``l2lb_apiserver_requests_total{verb,resource,code}``,
``l2lb_apiserver_watches``).

Debug endpoints (``/l2lb-debug/...``; not logged, no faults)
  GET/DELETE ``requests`` (``?since=t``): list of {verb, path, resource, subresource, namespace, name,
  group, code, t, ms, ua[, fault]}; a watch is logged when its stream starts.
  POST/GET/DELETE ``faults``: {status, retry_after, count, latency_ms, match, verb, drop_watches}.
  POST ``compact`` ({"rv": N} optional), POST ``reset`` ({"keep_crds": false} optional),
  GET/POST ``config`` {bookmark_interval, watch_window}, GET ``state``.

Persistence: ``--state-file`` is rewritten (atomically) 0.2 s after changes and on clean shutdown.
After an unclean stop the resourceVersion counter jumps by 1000 so none is reused; watch history
starts empty after any restart (watches from older resourceVersions get 410 and relist).
"""
