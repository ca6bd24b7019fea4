"""The remote wing: an engine that is a model already served over HTTP (an OpenAI-compatible
server: vLLM's, SGLang's, TGI's, a hosted API), reached at an ``EndpointTarget``."""
