"""Generated documentation and JSON Schema, from the tables in the code."""
