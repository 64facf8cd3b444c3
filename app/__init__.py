"""SwarmDirector: an asynchronous streaming API server for AutoGen multi-agent runs."""

__version__ = "0.1.0"
