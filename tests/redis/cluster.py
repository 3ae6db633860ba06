"""A real 3-master Redis Cluster on 127.0.0.1 for the cluster tests: three `redis-server
--cluster-enabled yes` processes on free ports, joined with `redis-cli --cluster create`."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Optional

import redis

from tests.redis.conftest import RedisServer, _executable, _free_cluster_port

CLUSTER_TIMEOUT = 30.0


class RedisCluster:
    """Three masters, no replicas; `stop()` kills them and removes their directories."""

    def __init__(self) -> None:
        self.nodes = [RedisServer(_executable(), "--cluster-enabled", "yes",
                                  "--cluster-node-timeout", "2000",
                                  "--cluster-config-file", "nodes.conf",
                                  pick_port=_free_cluster_port)
                      for _ in range(3)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("the cluster tests need redis-cli on PATH (redis-tools)")
        subprocess.run([cli, "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=CLUSTER_TIMEOUT)
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                with redis.Redis(port=port) as client:
                    states.append(client.cluster("info").get("cluster_state"))
            if all(state == "ok" for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis cluster on {self.ports} did not reach cluster_state:ok")

    def client(self, timeout: Optional[float] = 5.0) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0],
                                  socket_timeout=timeout)

    def flush(self) -> None:
        for port in self.ports:
            with redis.Redis(port=port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.close()
