"""The agent: prompt, grammar, policy, loop, emulated episodes, safety gate, traces (the action
schema it writes is the device layer's, ``android_bridge.actions``)."""
