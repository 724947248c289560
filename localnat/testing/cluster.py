"""A Ray cluster of several nodes on one machine (`ray.cluster_utils.Cluster`), for the
multi-node tests and jobs.node_loss: a head that schedules nothing and workers of 3 logical
CPUs (one scoring actor of 2 each, the rest for reading), nodes added and lost without
grace. Drivers join it by `address`; this process does not."""

from __future__ import annotations

from pathlib import Path


class Nodes:
    """A head (no CPUs: it schedules nothing) and workers of 3 logical CPUs: one scoring
    actor of 2 each, the rest for reading. `env`: a worker's own environment."""

    def __init__(self, home: Path):
        from ray.cluster_utils import Cluster

        self.env = {"HOME": str(home)}  # every node's `~` (the drivers' too), unless told
        # a node lost is known in about 3 s (Ray's default: 15), as a test can wait
        health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
        head = {"num_cpus": 0, "env_vars": self.env, "_system_config": health}
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.workers = [self.add() for _ in range(2)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, env: dict | None = None):
        return self.cluster.add_node(num_cpus=3, env_vars=env or self.env)

    def kill(self, node) -> None:
        """Without grace: a machine gone (its raylet and every worker process)."""
        self.cluster.remove_node(node, allow_graceful=False)
        if node in self.workers:
            self.workers.remove(node)

    def close(self) -> None:
        from ray._common.utils import reset_ray_address

        for node in list(self.cluster.worker_nodes):
            self.cluster.remove_node(node, allow_graceful=False)
        if self.cluster.head_node is not None:
            self.cluster.remove_node(self.cluster.head_node, allow_graceful=False)
        reset_ray_address()  # a later `ray.init()` starts its own Ray, as it would have
