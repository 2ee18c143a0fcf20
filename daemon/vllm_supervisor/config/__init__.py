"""models.yaml: YAML with positions, problems, the model keys, the supervision settings
and the registry. Imports the engine layer for option types, nothing above it."""
