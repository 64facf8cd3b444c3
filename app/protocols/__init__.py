"""Views of a run's event log in other people's protocols: one package per dialect."""
