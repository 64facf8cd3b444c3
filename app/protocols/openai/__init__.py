"""The OpenAI-compatible dialect (Models, Chat Completions and Responses), a view of a run's event log."""
