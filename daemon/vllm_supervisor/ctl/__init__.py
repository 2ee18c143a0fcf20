"""Everything inside `vllmctl`: parser, admin-socket client, commands, probe, export.
Never imports the runtime side or aiohttp's server (import-linter contracts in pyproject.toml)."""
