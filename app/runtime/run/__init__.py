"""One run's parts, each small, each pointing one way (``execution`` and ``chain`` drive them).

- ``state``: what the run is (``RunState``) and how it stops (``Stop``: its token and the reason);
- ``journal``: its events, numbered; durable ones committed then published, deltas streamed;
- ``tokens``: the per-token sink, and which deltas a message was streamed as (by ids);
- ``humans``: the input request it may wait on, from ask to answer;
- ``messages``: its stored messages, their positions, its result, thoughts waiting for what follows;
- ``ledger``: its model calls (usage, and the call that failed);
- ``outcome``: how it ended, and the one classifier of errors;
- ``consumer``: ``RunParts`` and the dispatch of a team's stream items, for a team and a chain;
- ``settle``: its terminal event and the end of its row;
- ``deps``: what every run of the process shares.
"""
