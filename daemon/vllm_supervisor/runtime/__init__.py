"""Everything inside `vllm-supervisor run`: states, events, the supervisor and its
watchers, the engine process and warden, probes, diagnosis, notify, logs, metrics, the
admin socket and the service entry point."""
