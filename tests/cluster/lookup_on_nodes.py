"""Run as a driver of a cluster (`python tests/cluster/lookup_on_nodes.py ADDRESS NAMESPACE`):
the score cache's key index built once into the object store (`shared_view`, as a run does),
then every key of the namespace's parts looked up by a task pinned to each worker node, each
mapping the index from its own node's object store (`Lookup.open`), and once here from an
index built in this process. Prints JSON: {"reference": [hits, digest of where], "nodes":
{node id: [hits, digest]}}."""

import hashlib
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from localnat.curate.cache.keys import KEY
from localnat.curate.cache.lookup import Lookup, build_index, shared_view
from localnat.curate.cache.namespace import view


def found(lookup: Lookup, keys: pa.Array) -> list:
    hit, where = lookup.find(keys)
    return [int(hit.sum()), hashlib.blake2b(where.tobytes()).hexdigest()]


def on_node(shared, keys: pa.Array) -> list:
    return found(Lookup.open(shared, []), keys)


def main(address: str, ns: str) -> None:
    ray.init(address=address, log_to_driver=False)
    cache = view(ns)
    keys = pa.chunked_array(
        [pq.read_table(part, columns=[KEY]).column(KEY) for part in cache.parts]
    ).combine_chunks()
    shared = shared_view(cache)
    task = ray.remote(num_cpus=0)(on_node)
    workers = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    refs = {
        n["NodeID"]: task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(shared, keys)
        for n in workers
    }
    nodes = {node: ray.get(ref) for node, ref in refs.items()}
    reference = found(Lookup(cache, build_index(cache), []), keys)
    print(json.dumps({"reference": reference, "keys": len(keys), "nodes": nodes}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
