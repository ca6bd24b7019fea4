"""Engines on a Ray cluster: data-parallel replicas as Ray actors (``replicas``), one engine
spread over several nodes by vLLM's Ray executor (``multinode``), and the cluster both run on
(``cluster``: found, started or joined, then awaited). Ray is imported only when one is built."""
