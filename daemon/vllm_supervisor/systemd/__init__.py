"""What a systemd service speaks: sd_notify(3), and structured logs for journald."""
