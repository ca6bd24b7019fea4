"""Model services: a model served by vLLM's own OpenAI server that outlives the command which
started it, so that later runs attach to it instead of loading the model again.

- ``python -m harness.serve model=... strategy=... tier=...`` (``cli.py``) composes and plans
  like a run, starts the server with the plan's deployment (``server.py``), waits for it, checks
  it and registers it (``registry.py``: one 0600 JSON file per service under
  ``<outputs_root>/services/``); ``--list`` and ``--stop ID|all`` list and stop them.
- A run whose model and deployment match a live service of its user attaches to it
  (``attach.py``: ``find_service``, ``attached_engine``) and evaluates through an endpoint engine
  (``harness.engines.remote``); one that does not match loads as before.

docs/services.md is the user's page.
"""
