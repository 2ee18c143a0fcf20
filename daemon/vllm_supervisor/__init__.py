"""vllm-supervisor: keeps vLLM model servers alive on bare-metal GPU hosts under systemd."""

__version__ = "0.1.0"
