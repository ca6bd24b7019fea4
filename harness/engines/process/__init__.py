"""An engine in a process of its own: the harness side (``engine``: ``EngineProcess``, and
``proxy``: the lm-eval ``LM`` it shows), the child's side (``child``) and what both agree on
(``serving``: the operations that cross the pipe)."""
