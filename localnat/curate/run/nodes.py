"""What every node of the cluster must see: the run's directory and the score cache. Actors
write where they run, so on a cluster of several machines a local path (a node's own disk)
scatters a run's parts over disks the driver never reads; object stores (s3://, gs://) are
shared by nature, a local path only on a mount every node shares.

The witness of a location is a lease the driver holds there while the pass runs (the run's
`_lease/<owner>.json`, the cache's `readers/<owner>.json`): a node sees the location when it
reads that lease with its owner. Nothing is written for the check."""

from __future__ import annotations

import os

from ...redact import redact
from ..storage import read_json

ANSWER_S = 120.0  # a node's task: a read of a few bytes, once its worker is up


class NotShared(RuntimeError):
    """A local output or cache path that some nodes of the cluster do not see."""


def local(uri: str) -> bool:
    return "://" not in uri or uri.lower().startswith("file://")


def witnesses(leases: dict) -> dict[str, tuple[str, str]]:
    """Option name -> (lease file, its owner), for the leases (`Lease`) held in local
    locations: what a node reads to show it sees them."""
    return {name: (lease.uri, lease.owner) for name, lease in leases.items() if local(lease.uri)}


def check_every_node_sees(seen: dict[str, tuple[str, str]]) -> None:
    """On a Ray cluster of more than one node, a task pinned to each node reads every
    witness (`witnesses`); a node that does not stops the run, in a line naming the nodes
    and what to use instead."""
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 or not seen:
        return
    blind = _blind_nodes(nodes, seen)
    if blind:
        raise NotShared(
            "; ".join(
                f"--{name}: {redact(_directory(seen[name][0]))} is a local path that "
                f"{len(where)} of {len(nodes)} nodes do not see ({', '.join(where)})"
                for name, where in blind.items()
            )
            + ": their actors would write where the driver never reads; use an s3:// or gs:// "
            "URI, or a path on a mount every node shares"
        )


def check_this_node_sees(seen: dict[str, tuple[str, str]]) -> None:
    """In an actor, before it writes: a node that joined after the run checked the
    cluster (an autoscaler's) must see the locations too."""
    blind = [name for name, ok in _read(seen).items() if not ok]
    if blind:
        import ray

        node = ray.get_runtime_context().get_node_id()[:12]
        raise NotShared(
            f"node {node} ({os.uname().nodename}) does not see "
            + ", ".join(f"--{n}: {redact(_directory(seen[n][0]))}" for n in blind)
            + ", a local path (it joined after the run checked every node): use an s3:// "
            "or gs:// URI, or a path on a mount every node shares"
        )


def _blind_nodes(nodes: list[dict], seen: dict) -> dict[str, list]:
    """Option name -> the nodes ("<ip> <node id>") that do not read its witness."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    read = ray.remote(num_cpus=0, max_retries=0)(_read)
    refs = {
        f"{n['NodeManagerAddress']} {n['NodeID'][:12]}": read.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(seen)
        for n in nodes
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=ANSWER_S)
    blind: dict[str, list] = {}
    for node, ref in refs.items():
        try:
            ok = ray.get(ref) if ref in ready else {}  # silent for minutes: it cannot tell
        except ray.exceptions.RayError:
            continue  # a node lost since it was listed runs no actor: nothing to check
        for name in seen:
            if not ok.get(name):
                blind.setdefault(name, []).append(node)
    return blind


def _read(seen: dict[str, tuple[str, str]]) -> dict[str, bool]:
    return {
        name: (read_json(uri) or {}).get("owner") == owner for name, (uri, owner) in seen.items()
    }


def _directory(lease_uri: str) -> str:
    """The location a lease file witnesses: two folders up (`_lease/`, `readers/`)."""
    return lease_uri.rsplit("/", 2)[0]
