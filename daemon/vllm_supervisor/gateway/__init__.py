"""The host gateway (`vllm-supervisor gateway`): one OpenAI endpoint for every model, started
on demand and swapped on shared GPUs, over the instances' admin sockets."""
