"""schedagent: an agentic tuner for the Linux CPU scheduler built on sched_ext."""

__version__ = "0.1.0"
