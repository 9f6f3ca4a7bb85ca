"""The agent: action schema, prompt, loop, safety gate, traces."""
