"""Engines that answer in the process that builds them: lm-eval's Hugging Face model (``hf``) and
its vLLM model (``vllm``, built only inside a process of its own: ``harness.engines.process``).

Each is ``Class(plan)``: built from the plan alone, so the same class serves this process, a
process of its own and every Ray replica (``harness.engines.ENGINES`` names it once)."""
