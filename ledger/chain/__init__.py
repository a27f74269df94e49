"""The chain: the java-tron HTTP client and its transport, the block parser, address forms and the
readers for the node's reply shapes (values, accounts, event-plugin triggers, opening snapshots)."""
