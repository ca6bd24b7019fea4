"""vLLM's helpers that never import vLLM: which build is installed (``install``), how the CPU
build is placed on this machine's cores and memory (``cpu``), and what stops a plan's vLLM engine
here before anything loads (``preflight``)."""
