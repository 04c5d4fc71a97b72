"""The schedagent daemon: continuous, guarded tuning of configured targets (issue 8)."""
