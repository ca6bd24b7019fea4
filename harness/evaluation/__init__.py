"""The resident loop: every dataset evaluated by lm-eval against one engine."""
