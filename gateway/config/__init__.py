"""Config: the YAML source with positions, the declarations, profiles, the JSON Schema."""
