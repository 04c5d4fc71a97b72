"""The policy repository: model, schema, static gate and build step."""
