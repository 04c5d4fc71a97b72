"""The execution side: everything that acts on the system on reasoning's behalf.

``engine`` verifies, loads, guards and rolls back schedulers; ``measure`` reads a
target's live metric. Reasoning (``schedagent.agent``) reaches both only through the
port in ``schedagent.agent.port``, implemented in ``schedagent.execution.port``.
"""
