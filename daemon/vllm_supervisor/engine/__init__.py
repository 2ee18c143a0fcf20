"""The vLLM engine as installed in a venv: detection, versions, typed options, flags and
the flag cache, and the probe that runs inside the engine venv. Never imports vllm."""
