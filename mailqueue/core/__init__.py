"""The pure core: messages, addresses, rules, payloads, responses, routing, envelopes. No I/O."""
