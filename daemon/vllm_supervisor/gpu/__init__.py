"""The GPUs of this host through NVML (nvidia-ml-py), behind one narrow interface: devices,
their memory, and the processes that hold it. Without an NVIDIA driver every answer is "no
NVIDIA GPU", so CPU engines keep working; tests inject recorded answers."""
