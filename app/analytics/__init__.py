"""Analytics: runs, messages, tokens, model-call latency and failures per team, agent and conversation."""
